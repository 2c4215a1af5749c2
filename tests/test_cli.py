import json

import pytest
from click.testing import CliRunner

from latentreason.cli import COMMANDS, main


def test_every_command_is_listed_and_has_help():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output, name


def test_remote_caching_needs_the_nnsight_backend(tmp_path):
    res = CliRunner().invoke(main, ["cache", "--pair", "organism", "--rollouts", str(tmp_path), "--sites", "resid_post.1", "--out", str(tmp_path / "a"), "--remote"])
    assert res.exit_code != 0 and "--remote needs --backend nnsight" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- arguments are checked before any model loads

import shutil


@pytest.fixture(scope="module")
def unloadable_pair(tmp_path_factory):
    """A copy of the organism whose weights fail to load: any error but the argument's means a model was loaded first."""
    from latentreason.organism import default_pair_dir

    d = shutil.copytree(default_pair_dir(), tmp_path_factory.mktemp("broken") / "pair")
    for role in ("base", "post_rl"):
        w = d / role / "model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    return str(d)


def _refused_before_loading(args, message, out=None):
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0, res.output
    assert message in res.output, res.output
    assert "Traceback" not in res.output and "model.safetensors" not in res.output, res.output
    if out is not None:
        assert not out.exists(), "a refused command created its --out"


# ----------------------------------------------------- sites, defaults, up-front validation, strict JSON

def strict_loads(text: str):
    """``json.loads`` that refuses bare NaN / Infinity (not JSON)."""

    def refuse(name: str):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def corpus_run(organism, tmp_path_factory):
    """A run directory with 8 corpus-style post-RL rollouts of the organism (planted labels)."""
    from latentreason.organism.corpus import CorpusConfig, make_corpus
    from latentreason.rollouts import make_row, task_for_pair, write_rollouts

    root = tmp_path_factory.mktemp("cli_run")
    task = task_for_pair(organism)
    exs = make_corpus(task, 8, CorpusConfig(worked_fraction=1.0, switch_continue=1.0), seed=0)
    rows = [make_row(task, rollout_id=f"r{i:03d}", model="post_rl", split="train", index=i, problem=e.problem, completion=e.completion) for i, e in enumerate(exs)]
    write_rollouts(root / "rollouts", rows, organism, task, {"synthetic": True})
    return root


@pytest.fixture(scope="module")
def default_cache(corpus_run, organism):
    """``latentreason cache`` without --sites."""
    out = corpus_run / "act_default"
    res = CliRunner().invoke(main, ["cache", "--pair", organism.source, "--rollouts", str(corpus_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_cache_defaults_to_the_pairs_sites_and_records_layer_counts(default_cache, organism):
    from latentreason.cache import ActivationCache

    c = ActivationCache.open(default_cache)
    assert c.sites == organism.default_sites() == ["resid_post.1", "resid_post.2"]  # the pair's site, then its router site
    assert c.manifest.extra["n_layers"] == {"base": 3, "post_rl": 3}


def test_a_depth_fraction_site_is_accepted_by_cache_taxonomy_and_extract(corpus_run, organism, tmp_path):
    from latentreason.cache import ActivationCache
    from latentreason.vectors import load_vectors

    run = CliRunner().invoke
    act = tmp_path / "act"
    res = run(main, ["cache", "--pair", organism.source, "--rollouts", str(corpus_run), "--sites", "resid_post@0.5,resid_post@1", "--out", str(act)])
    assert res.exit_code == 0, res.output
    assert ActivationCache.open(act).sites == ["resid_post.1", "resid_post.2"]  # floor(0.5 * 3), and at most the last layer
    res = run(main, ["taxonomy", "--cache", str(act), "--site", "resid_post@0.5", "--k", "3", "--seeds", "2", "--out", str(tmp_path / "tax")])
    assert res.exit_code == 0, res.output
    assert "at resid_post.1" in res.output and json.loads((tmp_path / "tax" / "metrics.json").read_text())["site"] == "resid_post.1"
    res = run(main, ["extract", "--pair", organism.source, "--cache", str(act), "--taxonomy", "planted", "--site", "resid_post@0.9", "--out", str(tmp_path / "vec")])
    assert res.exit_code == 0, res.output
    assert {str(v.site) for v in load_vectors(tmp_path / "vec").values()} == {"resid_post.2"}
    res = run(main, ["cache", "--pair", organism.source, "--rollouts", str(corpus_run), "--sites", "resid_post@2", "--out", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "depth fraction" in res.output and "Traceback" not in res.output and not (tmp_path / "bad").exists()


def test_taxonomy_defaults_to_the_caches_first_site_and_a_k_sweep_of_2_to_8(default_cache, tmp_path):
    from latentreason.cache import ActivationCache
    from latentreason.taxonomy import default_ks

    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(default_cache), "--seeds", "2", "--out", str(tmp_path / "tax")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "tax" / "metrics.json").read_text())
    n = len(ActivationCache.open(default_cache).sentences)
    assert metrics["site"] == "resid_post.1" and [r["k"] for r in metrics["sweep"]] == list(range(2, min(8, n) + 1))
    assert default_ks(50) == "2,3,4,5,6,7,8" and default_ks(3) == "2,3"
    with pytest.raises(ValueError, match="at least 2"):
        default_ks(1)
    res = CliRunner().invoke(main, ["extract", "--pair", "organism", "--cache", str(default_cache), "--taxonomy", str(tmp_path / "tax"), "--out", str(tmp_path / "vec")])
    assert res.exit_code == 0, res.output  # extract's site defaults to the taxonomy's


def test_a_depth_fraction_on_a_cache_without_layer_counts_names_the_fix(default_cache, tmp_path):
    import shutil

    from latentreason.cache import ActivationCache
    from latentreason.taxonomy import cache_site_check

    old = tmp_path / "old"
    shutil.copytree(default_cache, old)
    import dataclasses

    from latentreason.manifest import Manifest

    man = Manifest.read(old)
    Manifest.write(dataclasses.replace(man, extra={k: v for k, v in man.extra.items() if k != "n_layers"}), old)  # as a cache made before layer counts were recorded
    with pytest.raises(ValueError, match=r"depth fraction.*name the layer instead.*resid_post\.1, resid_post\.2"):
        cache_site_check(ActivationCache.open(old), "resid_post@0.5")
    assert cache_site_check(ActivationCache.open(default_cache), "resid_post@0.5") == "resid_post.1"


@pytest.mark.parametrize(
    "args, message",
    [
        (["recover", "--alphas", "0.5,inf"], "alpha=inf is not a finite number"),
        (["recover", "--alphas", "nan"], "alpha=nan is not a finite number"),
        (["recover", "--max-new-tokens", "0"], "max_new_tokens=0 must be a positive integer"),
        (["recover", "--site", "resid_post.9"], "Unknown hook site 'resid_post.9': this model has layers 0–2 (the base model"),
        (["recover", "--router-site", "mlp_out.3"], "Unknown hook site 'mlp_out.3': this model has layers 0–2 (the post_rl model"),
        (["recover", "--site", "resid_mid.1"], "Cannot parse hook site 'resid_mid.1'"),
        (["rollouts", "--n", "0"], "n=0: ask for at least one problem"),
        (["rollouts", "--max-new-tokens", "0"], "max_new_tokens=0 must be a positive integer"),
        (["rollouts", "--temperature", "inf"], "temperature=inf is not a finite number"),
        (["rollouts", "--models", "post_rl,critic"], "unknown model role 'critic'"),
        (["quality", "--n", "0"], "--n 0: ask for at least one problem"),
        (["quality", "--sft-lr", "inf"], "--sft-lr=inf is not a finite number"),
        (["quality", "--fractions", "0,1.5"], "--fractions=1.5 must be <= 1"),
    ],
)
def test_bad_arguments_are_refused_before_any_model_loads(unloadable_pair, tmp_path, args, message):
    _refused_before_loading([args[0], "--pair", unloadable_pair, "--out", str(tmp_path / "run"), *args[1:]], message, tmp_path / "run")


def test_cache_and_extract_check_sites_against_the_config_before_loading(unloadable_pair, tmp_path):
    _refused_before_loading(["cache", "--pair", unloadable_pair, "--rollouts", str(tmp_path), "--sites", "resid_post.1,resid_post.3", "--out", str(tmp_path / "a")], "Unknown hook site 'resid_post.3': this model has layers 0–2")
    _refused_before_loading(["cache", "--pair", unloadable_pair, "--rollouts", str(tmp_path), "--sites", "resid_post.1", "--batch-size", "0", "--out", str(tmp_path / "a")], "--batch-size=0 must be a positive integer")
    _refused_before_loading(["extract", "--pair", unloadable_pair, "--cache", str(tmp_path), "--taxonomy", "planted", "--site", "resid_pre.5", "--out", str(tmp_path / "v")], "Unknown hook site 'resid_pre.5'")


@pytest.mark.parametrize("command", ["rollouts", "recover", "quality"])
def test_unwritable_or_file_shadowed_out_is_refused_before_any_model_loads(unloadable_pair, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's\n")
    run = [command, "--pair", unloadable_pair]
    _refused_before_loading([*run, "--out", str(blocker)], "is a file")  # click's own check (file_okay=False)
    _refused_before_loading([*run, "--out", str(blocker / "run")], f"--out {blocker / 'run'} cannot be created: {blocker} is a file")
    _refused_before_loading([*run, "--out", "/sys/latentreason-test-run"], "--out /sys/latentreason-test-run is not writable (its nearest existing parent /sys is not writable)")
    assert blocker.read_text() == "the user's\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-train", "1"], "--n-train 1"),
        (["--site", "resid_mid.1"], "Cannot parse hook site 'resid_mid.1'"),
        (["--router-site", "resid_post@7"], "depth fraction"),
        (["--vector-max-tokens", "0"], "--vector-max-tokens"),
        (["--vector-batch-size", "0"], "--vector-batch-size"),
    ],
)
def test_recover_refuses_bad_arguments_before_any_work_naming_the_flag(tmp_path, args, message):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["recover", "--out", str(out), *args])
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()  # refused before the pair loaded or the run directory was made


def test_recover_config_carries_the_vector_budget_to_extraction():
    import dataclasses

    from latentreason.extract import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS
    from latentreason.recovery import RecoverConfig

    cfg = RecoverConfig()
    assert (cfg.vector_batch_size, cfg.vector_max_tokens) == (DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS)
    from latentreason.cli.recover import recover

    flags = {p.name: p.default for p in recover.params}
    assert (flags["vector_batch_size"], flags["vector_max_tokens"]) == (cfg.vector_batch_size, cfg.vector_max_tokens)  # documented defaults agree
    assert dataclasses.replace(cfg, vector_max_tokens=512, vector_batch_size=4).key() == cfg.key()  # vector settings do not rename evaluation points
    with pytest.raises(ValueError, match="--n-train"):
        RecoverConfig(n_train=1)


def test_dumps_json_turns_nan_and_infinities_into_null_wherever_they_are():
    import numpy as np
    import torch

    from latentreason.io import dumps_json

    obj = {"a": float("nan"), "b": [1.0, float("inf"), (float("-inf"),)], "c": np.float32("nan"), "d": torch.tensor([0.5, float("nan")]), "e": np.array([np.nan])}
    with pytest.raises(ValueError, match="not strict JSON"):
        strict_loads(json.dumps({"a": float("nan")}))  # what the commands printed before
    assert strict_loads(dumps_json(obj)) == {"a": None, "b": [1.0, None, [None]], "c": None, "d": [0.5, None], "e": [None]}
    assert strict_loads(dumps_json({"p": object()}, default=lambda o: "obj")) == {"p": "obj"}


def test_organism_eval_json_is_strict():
    res = CliRunner().invoke(main, ["organism", "eval", "--n", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert strict_loads(res.output)["n"] == 2


def test_every_json_flag_prints_through_the_one_strict_encoder():
    import inspect
    import re

    from latentreason.cli import COMMANDS

    for name, (module, _) in COMMANDS.items():
        src = inspect.getsource(__import__(module, fromlist=["_"]))
        assert not re.search(r"click\.echo\(json\.dumps", src), f"{name} prints json.dumps: use latentreason.io.dumps_json"
