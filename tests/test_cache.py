"""Activation cache: shards, index, reader, resumption after SIGKILL, and refusals."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from latentreason.cache import ActivationCache, cache_activations, shard_name
from latentreason.cli import main
from latentreason.io import read_json, sha256_file, write_jsonl
from latentreason.manifest import Manifest
from latentreason.organism.corpus import CorpusConfig, make_corpus
from latentreason.rollouts import make_row, task_for_pair, write_rollouts
from latentreason.sites import num_layers
from latentreason.tasks.arith import strategy_labels

SITE = "resid_post.1"  # a non-final block of the organism (>= 3 layers), so it equals hidden_states[2]


def synthetic_rows(pair, n: int, seed: int = 0, empty: bool = True) -> list[dict]:
    """Organism-style worked solutions (checks, corrections), plus one empty completion."""
    task = task_for_pair(pair)
    exs = make_corpus(task, n, CorpusConfig(worked_fraction=0.8, switch_continue=1.0), seed=seed)
    rows = [make_row(task, rollout_id=f"r{i:04d}", model="post_rl", split="train", index=i, problem=ex.problem, completion=ex.completion) for i, ex in enumerate(exs)]
    if empty:
        rows[1] = make_row(task, rollout_id="r0001", model="post_rl", split="train", index=1, problem=exs[1].problem, completion="")
    return rows


def write_run(pair, path, n: int, seed: int = 0):
    write_rollouts(path / "rollouts", synthetic_rows(pair, n, seed), pair, task_for_pair(pair), {"synthetic": True})
    return path


@pytest.fixture(scope="module")
def run(organism, tmp_path_factory):
    return write_run(organism, tmp_path_factory.mktemp("run"), 40)


@pytest.fixture(scope="module")
def cache(organism, run, tmp_path_factory):
    out = tmp_path_factory.mktemp("act") / "c"
    res = CliRunner().invoke(main, ["cache", "--pair", organism.source, "--rollouts", str(run), "--sites", f"{SITE},resid_pre.0", "--out", str(out), "--shard-tokens", "300", "--batch-size", "7"])
    assert res.exit_code == 0, res.output
    return ActivationCache.open(out)


def hidden(pair, role: str, row: dict, layer: int):
    """HF ``output_hidden_states[layer]`` on the cached text, unbatched; and where the completion starts."""
    tok = pair.tokenizer(role)
    p = tok(pair.format_prompt(role, row["prompt"]))["input_ids"]
    c = tok(row["completion"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hs = pair.model(role)(input_ids=torch.tensor([p + c]), output_hidden_states=True).hidden_states
    return hs[layer][0], len(p)


def test_manifest_lists_every_shard_with_its_hash_and_the_models(cache, organism):
    man = Manifest.read(cache.directory, kind="activations")
    shards = sorted(f for f in man.files if f.startswith("shard_"))
    assert len(shards) > 2 and shards == [shard_name(i) for i in range(len(shards))]
    assert all(sha256_file(cache.directory / f) == h for f, h in man.files.items())
    assert "index.json" in man.files and man.extra["index"] == "index.json"
    assert cache.sites == ["resid_post.1", "resid_pre.0"] and cache.models == ["base", "post_rl"]
    assert cache.fingerprint("post_rl") == organism.fingerprint("post_rl") and cache.fingerprint("base") == organism.fingerprint("base")
    assert sorted(os.listdir(cache.directory)) == sorted([*man.files, "manifest.json"])  # no progress or temp files left
    cache.verify()
    from safetensors.torch import load_file

    shard = load_file(str(cache.directory / shards[0]))  # plain safetensors, readable by any client
    assert set(shard) == {f"{m}/{s}{t}" for m in cache.models for s in cache.sites for t in ("", "/last_prompt")}
    assert shard["base/resid_post.1"].shape[1] == cache.d_model("base") == organism.base_model.config.hidden_size
    assert shard["base/resid_post.1"].dtype == torch.float32


def test_sentences_carry_planted_labels_and_token_spans_for_each_model(cache):
    assert len(cache.sentences) == sum(len(r["sentences"]) for r in cache.rollouts)
    by_rollout = {}
    for s in cache.sentences:
        by_rollout.setdefault(s["rollout_id"], []).append(s["label"])
        assert set(s["tokens"]) == {"base", "post_rl"} and s["tokens"]["base"][1] > s["tokens"]["base"][0]
        assert s["rollout_model"] == "post_rl" and s["id"] == f"{s['rollout_id']}/{s['index']}"
    for r in cache.rollouts:
        assert by_rollout.get(r["id"], []) == strategy_labels(r["completion"])
        assert r["tokens"]["post_rl"]["prompt_tokens"] == len(r["prompt"]) + 1  # char tokenizer + BOS


def test_tokens_and_sentence_pooling_equal_hf_hidden_states(cache, organism):
    pooled = {m: cache.sentence_pooled(SITE, m) for m in cache.models}
    starts = {m: cache.sentence_start_tokens(SITE, m) for m in cache.models}
    k = 0
    for r in cache.rollouts:
        for m in cache.models:
            h, p = hidden(organism, m, r, 2)  # resid_post.1 == hidden_states[2]
            assert torch.allclose(cache.tokens(SITE, m, r["id"]), h[p:], atol=1e-5)
            for j, (s, e) in enumerate(r["tokens"][m]["spans"]):
                assert torch.allclose(pooled[m][k + j], h[p + s : p + e].mean(0), atol=1e-5)
                assert torch.allclose(starts[m][k + j], h[p + s - 1], atol=1e-5)  # j == 0: the last prompt token
        k += len(r["sentences"])
    assert k == pooled["base"].shape[0] == starts["post_rl"].shape[0]


def test_resid_pre_zero_is_the_embedding_output(cache, organism):
    r = cache.rollouts[0]
    h, p = hidden(organism, "base", r, 0)
    assert torch.allclose(cache.tokens("resid_pre.0", "base", r["id"]), h[p:], atol=1e-6)


def test_readers_read_each_shard_once(cache, monkeypatch):
    import safetensors

    opened = []
    real = safetensors.safe_open

    def counting(path, *a, **kw):
        opened.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(safetensors, "safe_open", counting)
    fresh = ActivationCache.open(cache.directory)
    ids = [rid for rid, _ in fresh.iter_rollouts(SITE, "post_rl")]
    n_shards = len({r["shard"] for r in fresh.rollouts})
    assert ids == [r["id"] for r in fresh.rollouts] and len(opened) == n_shards
    opened.clear()
    fresh.sentence_pooled(SITE, "base")
    assert len(opened) == n_shards


def test_empty_completion_has_no_tokens_and_no_sentences(cache):
    empty = next(r for r in cache.rollouts if r["completion"] == "")
    assert cache.tokens(SITE, "base", empty["id"]).shape == (0, cache.d_model("base")) and empty["sentences"] == []


def test_reader_names_unknown_sites_models_and_rollouts(cache):
    with pytest.raises(ValueError, match="holds sites .* not 'resid_post.2'"):
        cache.tokens("resid_post.2", "base", "r0000")
    with pytest.raises(ValueError, match="holds models"):
        cache.sentence_pooled(SITE, "single_problem_rl")
    with pytest.raises(KeyError, match="No rollout 'zz'"):
        cache.tokens(SITE, "base", "zz")
    with pytest.raises(ValueError, match="made with post_rl model"):
        cache.check_model("post_rl", "0" * 16)


def test_corrupt_truncated_or_missing_shard_is_named_when_read(cache, tmp_path):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(cache.directory, d)
    data = (d / shard_name(1)).read_bytes()
    (d / shard_name(1)).write_bytes(data[: len(data) // 2])
    c = ActivationCache.open(d)  # shards are checked lazily
    c.tokens(SITE, "base", c.rollouts[0]["id"])  # shard 0 is fine
    with pytest.raises(ValueError, match=f"{shard_name(1)} is corrupt or truncated"):
        list(c.iter_rollouts(SITE, "base"))
    with pytest.raises(ValueError, match=shard_name(1)):
        c.verify()
    (d / shard_name(1)).write_bytes(data)
    (d / shard_name(2)).unlink()
    with pytest.raises(FileNotFoundError, match=shard_name(2)):
        ActivationCache.open(d).sentence_pooled(SITE, "base")


def test_rerunning_a_finished_cache_keeps_it_and_other_settings_are_refused(cache, organism, run):
    before = {f: os.stat(cache.directory / f).st_mtime_ns for f in os.listdir(cache.directory)}
    cache_activations(organism, run, cache.directory, f"{SITE},resid_pre.0", shard_tokens=300, batch_size=7, progress=False)
    assert {f: os.stat(cache.directory / f).st_mtime_ns for f in os.listdir(cache.directory)} == before
    with pytest.raises(ValueError, match=r"other settings: config.dtype: 'float32' → 'float16'; config.sites: \['resid_post.1', 'resid_pre.0'\] → \['resid_post.0'\]"):
        cache_activations(organism, run, cache.directory, "resid_post.0", shard_tokens=300, batch_size=7, dtype="float16", progress=False)


def test_bfloat16_storage_is_close_to_float32(cache, organism, run, tmp_path):
    out = cache_activations(organism, run, tmp_path / "bf", [SITE], models=["post_rl"], dtype="bfloat16", shard_tokens=300, batch_size=7, progress=False)
    c = ActivationCache.open(out)
    x, y = c.tokens(SITE, "post_rl", "r0003"), cache.tokens(SITE, "post_rl", "r0003")
    assert x.dtype == torch.bfloat16 and torch.allclose(x.float(), y, atol=0.05, rtol=0.02)
    assert c.models == ["post_rl"] and c.sentence_pooled(SITE, "post_rl").dtype == torch.float32
    assert torch.allclose(c.sentence_start_tokens(SITE, "post_rl"), cache.sentence_start_tokens(SITE, "post_rl"), atol=0.05, rtol=0.02)


def test_cli_refuses_bad_sites_and_layers_in_one_line(organism, run, tmp_path):
    n = num_layers(organism.base_model)
    for sites, msg in [(f"resid_post.{n}", f"this model has layers 0–{n - 1}"), ("resid_mid.1", "Cannot parse hook site"), ("", "No hook site")]:
        res = CliRunner().invoke(main, ["cache", "--pair", organism.source, "--rollouts", str(run), "--sites", sites, "--out", str(tmp_path / "x")])
        assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output, res.output


class ToyTask:
    """A label-free task other than the organism's."""

    name = "toy"

    def prompt(self, p):
        return p["q"] + "="

    def extract_answer(self, completion):
        return completion.strip() or None

    def grade(self, p, completion):
        return self.extract_answer(completion) == p["a"]


def test_rollouts_of_another_task_or_model_or_none_are_refused(organism, tmp_path):
    other = dataclasses.replace(organism, task="")
    rows = [make_row(ToyTask(), rollout_id="t0", model="post_rl", split="test", index=0, problem={"q": "1+1", "a": "2"}, completion="2\n")]
    write_rollouts(tmp_path / "toy" / "rollouts", rows, other, ToyTask())
    with pytest.raises(ValueError, match="made for task 'arith', but the rollouts' task is 'toy'"):
        cache_activations(organism, tmp_path / "toy", tmp_path / "a1", SITE)

    twin = copy.deepcopy(organism.post_rl_model)
    with torch.no_grad():
        next(twin.parameters()).add_(0.01)
    changed = dataclasses.replace(organism, post_rl_model=twin, _fingerprints={})
    write_run(changed, tmp_path / "other_rl", 3)
    with pytest.raises(ValueError, match="made with post_rl model"):
        cache_activations(organism, tmp_path / "other_rl", tmp_path / "a2", SITE)

    write_run(organism, tmp_path / "empty", 3)
    write_jsonl(tmp_path / "empty" / "rollouts" / "rollouts.jsonl", [])
    man = Manifest.read(tmp_path / "empty" / "rollouts")
    dataclasses.replace(man, files={"rollouts.jsonl": sha256_file(tmp_path / "empty" / "rollouts" / "rollouts.jsonl")}).write(tmp_path / "empty" / "rollouts")
    with pytest.raises(ValueError, match="holds no rollouts"):
        cache_activations(organism, tmp_path / "empty", tmp_path / "a3", SITE)

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and holds no latentreason artifact \(notes.txt\)"):
        cache_activations(organism, write_run(organism, tmp_path / "ok", 3), tmp_path / "busy", SITE, models=["base"])
    with pytest.raises(FileNotFoundError, match="latentreason cache"):
        ActivationCache.open(tmp_path / "nowhere")


def finished_shards(out) -> int:
    try:
        return len(read_json(out / "progress.json")["shards"])
    except (FileNotFoundError, ValueError):  # not written yet
        return 0


def test_sigkilled_run_resumes_to_shards_identical_to_an_uninterrupted_run(organism, tmp_path):
    run = write_run(organism, tmp_path / "run", 60, seed=5)
    args = ["--sites", "resid_pre.0,resid_post.1", "--shard-tokens", "400", "--batch-size", "8"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-c", "from latentreason.cli import main; main()", "cache", "--pair", organism.source, "--rollouts", str(run), "--out", str(killed), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while finished_shards(killed) < 2:  # kill once two shards are recorded as finished
            assert proc.poll() is None and time.time() < deadline, "the cache command ended before two shards were finished"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert Manifest.read(killed, allow_running=True).status == "running", "killed too late: the run had finished"
    with pytest.raises(FileNotFoundError, match="unfinished cache"):  # readers refuse it
        ActivationCache.open(killed)
    kept = read_json(killed / "progress.json")["shards"]
    mtimes = {r["file"]: os.stat(killed / r["file"]).st_mtime_ns for r in kept}

    # restart, in-process, with the same settings; and an uninterrupted run to compare with
    cache_activations(organism, run, killed, "resid_pre.0,resid_post.1", shard_tokens=400, batch_size=8, progress=False)
    whole = cache_activations(organism, run, tmp_path / "whole", "resid_pre.0,resid_post.1", shard_tokens=400, batch_size=8, progress=False)
    a, b = Manifest.read(killed), Manifest.read(whole)
    assert len(a.files) > len(kept) + 2
    assert {f: os.stat(killed / f).st_mtime_ns for f in mtimes} == mtimes  # finished shards were kept, not redone
    assert a.files == b.files  # every shard and the index are byte-identical
    assert sorted(os.listdir(killed)) == sorted([*a.files, "manifest.json"])  # no temp or progress files left behind


# ---------------------------------------------------------------- rollouts from both models


@pytest.fixture(scope="module")
def mixed_cache(organism, tmp_path_factory):
    from _mixed_cache import make_mixed_cache

    return make_mixed_cache(organism, tmp_path_factory.mktemp("mixed"))


def test_generated_by_keeps_only_the_rollouts_that_role_generated(mixed_cache):
    from _mixed_cache import N_BASE, N_POST, SITE

    assert mixed_cache.rollout_roles == {"post_rl": N_POST, "base": N_BASE}
    post = mixed_cache.generated_by()  # default: the post-RL model's own traces
    assert {r["model"] for r in post.rollouts} == {"post_rl"} and len(post.rollouts) == N_POST
    assert {s["rollout_model"] for s in post.sentences} == {"post_rl"}
    mine = torch.tensor([s["rollout_model"] == "post_rl" for s in mixed_cache.sentences])
    for model in ("post_rl", "base"):  # every model's activations, on the post-RL rollouts only
        assert torch.equal(post.sentence_pooled(SITE, model), mixed_cache.sentence_pooled(SITE, model)[mine])
        assert torch.equal(post.sentence_start_tokens(SITE, model), mixed_cache.sentence_start_tokens(SITE, model)[mine])
    assert [rid for rid, _ in post.iter_rollouts(SITE, "base")] == [r["id"] for r in mixed_cache.rollouts if r["model"] == "post_rl"]
    both = mixed_cache.generated_by("post_rl,base")
    assert len(both.sentences) == len(mixed_cache.sentences)


def test_generated_by_a_role_with_no_rollouts_names_what_the_cache_holds(mixed_cache):
    from latentreason.cache import parse_roles

    with pytest.raises(ValueError, match=r"no rollouts generated by single_problem_rl \(it holds 16 from base, 24 from post_rl\).*--roles"):
        mixed_cache.generated_by(["single_problem_rl"])
    with pytest.raises(ValueError, match="names no model role"):
        parse_roles(" , ")
    assert parse_roles("post_rl, base,post_rl") == ("post_rl", "base")
