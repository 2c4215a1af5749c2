import json

import pytest

import latentreason.recovery as rec
from latentreason.recovery import RecoverConfig, run_recovery

SMALL = RecoverConfig(n_train=30, n_dev=8, n_test=16, alphas=(2.0,), thresholds=(0.5,), random_seeds=1, decodings=("greedy",), interventions=False, n_boot=200, vector_max_tokens=256)
POINT_KEYS = {"router", "is_oracle", "control", "alpha", "budget", "acc", "recovery", "recovery_ci", "n", "decoding"}


@pytest.fixture(scope="module")
def run(organism, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, run_recovery(organism, out, SMALL, progress=False)


def test_recovery_json_has_every_point_with_controls_and_an_oracle_label(run):
    out, result = run
    on_disk = json.loads((out / "recovery" / "recovery.json").read_text())
    assert {"base_acc", "post_rl_acc", "points"} <= set(on_disk)
    assert on_disk["site"] == "resid_post.1" and on_disk["router_site"] == "resid_post.2"  # the pair's defaults: the router reads the last block
    assert json.loads((out / "router" / "router.json").read_text())["site"] == "resid_post.2"
    assert all(POINT_KEYS <= set(p) for p in on_disk["points"])
    controls = {p["control"] for p in on_disk["points"]}
    assert {None, "random_vectors", "random_timing", "bias_only", "every_token", "first_sentence_only"} <= controls
    oracle = [p for p in on_disk["points"] if p["router"] == "oracle"]
    assert oracle and all(p["is_oracle"] for p in oracle)
    assert all(not p["is_oracle"] for p in on_disk["points"] if p["router"] != "oracle")
    for name in ("recovery_vs_budget", "recovery_vs_alpha"):
        assert (out / "recovery" / f"{name}.png").stat().st_size > 0 and (out / "recovery" / f"{name}.svg").exists()


def test_the_vector_budget_reaches_the_optimiser_and_the_json_is_strict(run):
    from latentreason.io import dumps_json
    from latentreason.manifest import Manifest
    from latentreason.vectors import load_vectors

    out, result = run
    vecs = load_vectors(out / "vectors")
    assert "bias" in vecs and all(v.provenance["max_tokens"] == 256 and v.provenance["batch_size"] == SMALL.vector_batch_size for v in vecs.values())
    assert Manifest.read(out / "vectors", kind="vectors").config["max_tokens"] == 256
    json.loads(dumps_json(result), parse_constant=lambda c: pytest.fail(f"bare {c}"))  # what recover --json prints


def test_router_steers_few_tokens_and_recovers_on_the_organism(run):
    _, result = run
    main = [p for p in result["points"] if p["control"] is None and not p["is_oracle"]]
    assert max(p["recovery"] for p in main) >= 0.8
    assert all(p["budget"] <= 0.2 for p in main)
    random = [p for p in result["points"] if p["control"] == "random_vectors"]
    assert all(p["recovery"] <= 0.3 for p in random)


def test_interrupted_run_resumes_without_recomputing_finished_points(run, organism, monkeypatch):
    out, result = run

    def boom(*a, **k):
        raise AssertionError("a finished point was recomputed")

    monkeypatch.setattr(rec, "evaluate_point", boom)
    monkeypatch.setattr(rec, "baseline", boom)
    again = run_recovery(organism, out, SMALL, progress=False)
    assert json.dumps(again["points"], sort_keys=True) == json.dumps(result["points"], sort_keys=True)


def test_same_seed_gives_the_same_recovery_json(run, organism, tmp_path):
    out, _ = run
    run_recovery(organism, tmp_path, SMALL, progress=False)
    a = json.loads((out / "recovery" / "recovery.json").read_text())
    b = json.loads((tmp_path / "recovery" / "recovery.json").read_text())
    assert a["points"] == b["points"] and a["base_acc"] == b["base_acc"]


def test_bad_budgets_and_alphas_are_refused():
    with pytest.raises(ValueError, match="outside"):
        RecoverConfig(thresholds=(1.5,))
    with pytest.raises(ValueError, match="not a number"):
        RecoverConfig(alphas=("big",))
    with pytest.raises(ValueError, match="decodings"):
        RecoverConfig(decodings=("beam",))
    with pytest.raises(ValueError, match="batch_size=0"):
        RecoverConfig(batch_size=0)


def test_greedy_results_do_not_depend_on_the_batch_size(organism):
    import dataclasses

    from latentreason.recovery import baseline
    from latentreason.rollouts import task_for_pair

    task = task_for_pair(organism)
    problems = task.sample("test", 7)
    big = baseline(organism, task, problems, "post_rl", "greedy", SMALL)
    small = baseline(organism, task, problems, "post_rl", "greedy", dataclasses.replace(SMALL, batch_size=3))
    assert small == big


def test_cli_refuses_budgets_outside_the_unit_interval(tmp_path):
    from click.testing import CliRunner

    from latentreason.cli import main

    res = CliRunner().invoke(main, ["recover", "--out", str(tmp_path), "--budgets", "0.1,1.2"])
    assert res.exit_code != 0 and "outside [0, 1]" in res.output and "Traceback" not in res.output


def test_vectors_from_another_model_are_refused(run, organism, tmp_path):
    import dataclasses
    import shutil

    from latentreason.vectors import load_vectors, save_vectors

    out, _ = run
    shutil.copytree(out, tmp_path / "r", dirs_exist_ok=True)
    vecs = load_vectors(tmp_path / "r" / "vectors")
    shutil.rmtree(tmp_path / "r" / "vectors")
    save_vectors([dataclasses.replace(v, fingerprint="0" * 16) for v in vecs.values()], tmp_path / "r" / "vectors")
    (tmp_path / "r" / "vectors" / "manifest.json").write_text("{}")
    shutil.rmtree(tmp_path / "r" / "recovery")
    with pytest.raises(ValueError, match="made for model"):
        run_recovery(organism, tmp_path / "r", SMALL, progress=False)


def test_single_problem_interventions_are_placed_on_the_curve(organism, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(SMALL, controls=False, oracle=False, interventions=True)
    result = run_recovery(organism, tmp_path, cfg, progress=False)
    names = {p["name"] for p in result["interventions"]}
    assert names == {"single_problem_rl", "single_problem_sft"}
    assert all(p["budget"] == 0.0 and len(p["recovery_ci"]) == 2 for p in result["interventions"])
    assert (tmp_path / "single_problem_sft" / "config.json").exists()
