"""Real pairs, end to end, without the hub: ``latentreason recover`` on a random-weight Qwen2 base and
Llama post-RL model with different tokenizers, from local GSM8K- and MATH-500-format files; the
GPU check's reduced CPU form; dtype and device_map plumbing of presets.

Random models write garbage, so the numbers mean nothing: these tests prove the pipeline runs,
degrades gracefully (few sentences, no accuracy gap) and writes valid artifacts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import _xtok_pairs as P
from latentreason.cli import main
from latentreason.pair import load_pair
from latentreason.recovery import RecoverConfig, run_recovery

REPO = Path(__file__).resolve().parents[1]
POINT_KEYS = {"router", "is_oracle", "control", "alpha", "budget", "acc", "recovery", "recovery_ci", "n", "decoding"}


def _strict_json(path: Path):
    """Parse as strict JSON: NaN / Infinity are not JSON."""

    def refuse(token: str):
        raise ValueError(f"{path} holds {token}, which is not valid JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory) -> Path:
    root = P.save_pair(tmp_path_factory.mktemp("xtok-pair"))
    P.write_jsonl(root / "data" / "gsm8k.jsonl", P.gsm8k_rows())
    P.write_jsonl(root / "data" / "math500.jsonl", P.math500_rows())
    return root


def _check_recovery(run: Path, n_test: int) -> dict:
    rec = _strict_json(run / "recovery" / "recovery.json")
    assert {"base_acc", "post_rl_acc", "points"} <= set(rec)
    assert rec["points"], "no recovery point was evaluated"
    for p in rec["points"]:
        assert POINT_KEYS <= set(p), sorted(POINT_KEYS - set(p))
        assert p["n"] == n_test and 0.0 <= p["budget"] <= 1.0 and 0.0 <= p["acc"] <= 1.0
        assert p["recovery"] is None or isinstance(p["recovery"], float)  # null when base and post-RL tie
        assert len(p["recovery_ci"]) == 2
    for name in ("recovery_vs_budget", "recovery_vs_alpha"):
        for suffix in (".png", ".svg"):
            assert (run / "recovery" / f"{name}{suffix}").stat().st_size > 0
    return rec


@pytest.mark.slow
def test_recover_cli_runs_on_a_qwen2_llama_pair_with_different_tokenizers_from_a_local_gsm8k_file(pair_dir):
    preset = P.write_preset(pair_dir, "gsm8k")
    pair = load_pair(preset, device="cpu")
    assert pair.base_model.config.model_type == "qwen2" and pair.post_rl_model.config.model_type == "llama"
    assert not pair.same_tokenizer
    run = pair_dir / "run-gsm8k"
    args = [
        "recover", "--pair", str(preset), "--out", str(run), "--data", str(pair_dir / "data" / "gsm8k.jsonl"),
        "--n-train", "12", "--n-dev", "4", "--n-test", "8", "--max-new-tokens", "16",
        "--alphas", "1", "--thresholds", "0.5", "--seeds", "1", "--decoding", "greedy",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rec = _check_recovery(run, 8)
    assert rec["task"] == "gsm8k"
    controls = {p["control"] for p in rec["points"]}
    assert {None, "random_vectors", "random_timing", "bias_only", "every_token", "first_sentence_only"} <= controls
    assert any(p["is_oracle"] for p in rec["points"])
    tax = _strict_json(run / "taxonomy" / "metrics.json")  # task without planted labels: "auto" discovered strategies
    assert tax["method"] == "kmeans" and 2 <= tax["k"] <= tax["n_sentences"]
    rollouts = [json.loads(line) for line in (run / "rollouts" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 12 and all(r["task"] == "gsm8k" and r["gold"] for r in rollouts)
    again = CliRunner().invoke(main, args)  # every point resumes from disk
    assert again.exit_code == 0, again.output
    assert _strict_json(run / "recovery" / "recovery.json")["points"] == rec["points"]


@pytest.mark.slow
def test_run_recovery_reads_a_local_math500_file_and_sweeps_no_more_clusters_than_sentences(pair_dir):
    pair = load_pair(P.write_preset(pair_dir, "math500"), device="cpu")
    run = pair_dir / "run-math500"
    cfg = RecoverConfig(n_train=5, n_dev=4, n_test=8, alphas=(2.0,), thresholds=(0.5,), random_seeds=1, decodings=("greedy",), max_new_tokens=16, controls=False, data=str(pair_dir / "data" / "math500.jsonl"))
    result = run_recovery(pair, run, cfg, progress=False)
    rec = _check_recovery(run, 8)
    assert rec["task"] == "math500" and result["task"] == "math500"
    assert {p["router"] for p in rec["points"]} == {"probe", "oracle"}
    tax = _strict_json(run / "taxonomy" / "metrics.json")
    assert 2 <= tax["k"] <= tax["n_sentences"]


def test_too_few_rollouts_for_any_strategy_raise_an_error_that_names_the_fix(pair_dir):
    pair = load_pair(P.write_preset(pair_dir, "gsm8k"), device="cpu")
    cfg = RecoverConfig(n_train=2, n_dev=4, n_test=8, alphas=(1.0,), thresholds=(0.5,), decodings=("greedy",), max_new_tokens=8, controls=False, oracle=False, data=str(pair_dir / "data" / "gsm8k.jsonl"))
    with pytest.raises(ValueError, match="--n-train"):
        run_recovery(pair, pair_dir / "run-tiny", cfg, progress=False)


def test_gpu_check_cpu_smoke_runs_every_phase(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_CPU_SMOKE": "1", "GPU_CHECK_OUT": str(tmp_path / "summary.json")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == []
    assert {"build", "cache", "steering", "hybrid_ids", "hybrid_text", "preset"} <= set(summary)
    assert summary["build"]["config"] == "tiny" and summary["hybrid_ids"]["budget"] > 0
    assert "GPU_CHECK " in proc.stdout and "all checks passed" in proc.stdout


PRESET = """
name = "tiny-dtype"
task = "gsm8k"
[base]
model = "models/base"
[post_rl]
model = "models/post_rl"
[defaults]
dtype = "{dtype}"
device_map = "auto"
"""


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_preset_dtype_reaches_the_loaded_models(pair_dir, dtype):
    preset = pair_dir / f"dtype-{dtype}.toml"
    preset.write_text(PRESET.format(dtype=dtype), encoding="utf-8")
    pair = load_pair(preset, device="cpu")
    want = getattr(torch, dtype)
    assert pair.base_model.dtype == want and pair.post_rl_model.dtype == want and pair.defaults["dtype"] == dtype
    assert load_pair(preset, device="cpu", dtype="float32").base_model.dtype == torch.float32  # an explicit dtype wins


def test_preset_device_map_is_passed_only_when_cuda_is_there_and_no_device_is_given(pair_dir, monkeypatch):
    from latentreason import presets

    preset = pair_dir / "dtype-float32.toml"
    preset.write_text(PRESET.format(dtype="float32"), encoding="utf-8")
    seen: list[tuple] = []
    real = presets.load_model

    def spy(path, **kw):
        seen.append((kw.get("device"), kw.get("device_map")))
        return real(path, **{**kw, "device_map": None, "device": "cpu"})  # sharding itself needs a GPU (benchmarks/gpu_check.sh)

    monkeypatch.setattr(presets, "load_model", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    load_pair(preset)
    assert seen == [(None, "auto"), (None, "auto")]
    seen.clear()
    load_pair(preset, device="cpu")  # an explicit device overrides the preset's device_map
    assert seen == [("cpu", None), ("cpu", None)]
    seen.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    load_pair(preset)
    assert seen == [("cpu", None), ("cpu", None)]


def test_cache_accepts_a_configured_backend_such_as_nnsight_in_remote_mode(pair_dir):
    """``remote="local"`` is nnsight's offline dry run of the NDIF path: serialised as NDIF would, run here."""
    from latentreason.backends import NNsightBackend
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.rollouts import generate_rollouts, task_for_pair, write_rollouts

    pair = load_pair(P.write_preset(pair_dir, "gsm8k"), device="cpu")
    task = task_for_pair(pair, data=pair_dir / "data" / "gsm8k.jsonl")
    run = pair_dir / "run-remote"
    write_rollouts(run / "rollouts", generate_rollouts(pair, task, "train", 3, max_new_tokens=8), pair, task)
    hf = ActivationCache.open(cache_activations(pair, run, run / "hf", "resid_post.2", progress=False))
    remote = ActivationCache.open(cache_activations(pair, run, run / "nnsight", "resid_post.2", backend=NNsightBackend(remote="local"), progress=False))
    assert remote.manifest.config["backend"] == "nnsight"
    for role in ("base", "post_rl"):
        for (rid, a), (rid2, b) in zip(hf.iter_rollouts("resid_post.2", role), remote.iter_rollouts("resid_post.2", role)):
            assert rid == rid2
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
