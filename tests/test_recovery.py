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
    assert Manifest.read(out / "vectors", kind="vectors").config["optimize"]["max_tokens"] == 256
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


def test_infinite_alphas_and_bad_sizes_are_refused_when_the_config_is_built():
    for kwargs, message in [({"alphas": (1.0, float("inf"))}, "alpha=inf is not a finite number"), ({"max_new_tokens": 0}, "max_new_tokens=0 must be a positive integer"),
                            ({"random_seeds": -1}, "random_seeds=-1 must be an integer >= 0"), ({"alphas": ()}, "alphas is empty"), ({"site": "resid_mid.1"}, "Cannot parse hook site")]:
        with pytest.raises(ValueError, match=message):
            RecoverConfig(**kwargs)


def test_a_site_the_model_lacks_is_refused_before_any_rollout_is_generated(organism, tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match="Unknown hook site 'resid_post.7': this model has layers 0–2"):
        run_recovery(organism, tmp_path, dataclasses.replace(SMALL, site="resid_post.7"), progress=False)
    assert not (tmp_path / "rollouts").exists()


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

    from latentreason.io import sha256_file
    from latentreason.manifest import Manifest
    from latentreason.vectors import load_vectors, save_vectors

    out, _ = run
    shutil.copytree(out, tmp_path / "r", dirs_exist_ok=True)
    d = tmp_path / "r" / "vectors"
    man, vecs = Manifest.read(d), load_vectors(d)
    save_vectors([dataclasses.replace(v, fingerprint="0" * 16) for v in vecs.values()], d)  # tampered: same names, another model's
    dataclasses.replace(man, files={n: sha256_file(d / n) for n in man.files}).write(d)
    with pytest.raises(ValueError, match="other settings: inputs.vectors"):  # the router and points were made from other vectors
        run_recovery(organism, tmp_path / "r", SMALL, progress=False)
    with pytest.raises(ValueError, match="made for model"):
        run_recovery(organism, tmp_path / "r", SMALL, progress=False, force=True)


def test_single_problem_interventions_are_placed_on_the_curve(organism, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(SMALL, controls=False, oracle=False, interventions=True)
    result = run_recovery(organism, tmp_path, cfg, progress=False)
    names = {p["name"] for p in result["interventions"]}
    assert names == {"single_problem_rl", "single_problem_sft"}
    assert all(p["budget"] == 0.0 and len(p["recovery_ci"]) == 2 for p in result["interventions"])
    assert (tmp_path / "single_problem_sft" / "config.json").exists()


# ---------------------------------------------------------------- stages: reuse only what matches


@pytest.mark.parametrize(
    "change, named",
    [
        ({"site": "resid_post.0"}, r"activations artifact made with other settings: config.sites: \['resid_post.1', 'resid_post.2'\] → \['resid_post.0', 'resid_post.2'\]"),
        ({"method": "diffmeans"}, r"vectors artifact made with other settings: config.method: 'optimized' → 'diffmeans'"),
        ({"n_train": 31}, r"rollouts artifact made with other settings: config.n: 30 → 31"),
        ({"seed": 1}, r"rollouts artifact made with other settings: config.seed: 0 → 1"),
    ],
)
def test_reusing_a_run_with_other_settings_is_refused_naming_them(run, organism, change, named):
    import dataclasses

    out, _ = run
    with pytest.raises(ValueError, match=named + r".*--force"):
        rec.build_artifacts(organism, out, dataclasses.replace(SMALL, **change), progress=False)


def test_another_taxonomy_is_refused_at_the_vectors(run, organism, tmp_path):
    import dataclasses
    import shutil

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    with pytest.raises(ValueError, match=r"config.taxonomy: 'planted' → 'directory'; inputs.taxonomy: None → '[0-9a-f]{12}…'"):
        rec.build_artifacts(organism, tmp_path / "r", dataclasses.replace(SMALL, taxonomy="kmeans"), progress=False)


def test_a_cache_of_since_replaced_rollouts_is_refused(run, organism, tmp_path):
    import shutil

    from latentreason.manifest import Manifest
    from latentreason.rollouts import read_rollouts, task_for_pair, write_rollouts

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    man, rows = read_rollouts(tmp_path / "r")
    settings = {k: v for k, v in man.config.items() if k not in ("task", "task_config")}
    write_rollouts(tmp_path / "r" / "rollouts", rows[:-1], organism, task_for_pair(organism), settings)  # same settings, other rows
    assert Manifest.read(tmp_path / "r" / "rollouts").config == man.config
    with pytest.raises(ValueError, match=r"activations artifact made with other settings: inputs.rollouts: '[0-9a-f]{12}…' → '[0-9a-f]{12}…'"):
        rec.build_artifacts(organism, tmp_path / "r", SMALL, progress=False)


def test_a_reused_router_routes_at_the_configs_threshold(run, organism):
    import dataclasses

    out, _ = run
    art = rec.build_artifacts(organism, out, dataclasses.replace(SMALL, threshold=0.3), progress=False)
    assert art["router"].threshold == 0.3
    assert json.loads((out / "router" / "router.json").read_text())["threshold"] == 0.5  # the saved one is never used for routing


def test_points_and_manifests_of_every_stage_are_complete(run):
    from latentreason.manifest import Manifest
    from latentreason.rundir import RunDir

    out, _ = run
    rd = RunDir(out)
    for d, kind in [(rd.rollouts, "rollouts"), (rd.activations, "activations"), (rd.vectors, "vectors"), (rd.router, "router"), (rd.points(SMALL.key()), "points"), (rd.recovery, "recovery"), (rd.root, "run")]:
        man = Manifest.read(d, kind=kind)
        assert man.status == "complete" and (kind == "run" or man.files), d
        man.verify(d)
    assert Manifest.read(rd.router).inputs["vectors"] == Manifest.read(rd.vectors).digest()
    assert rd.point(SMALL.key(), "base_greedy").exists()


def test_copied_vectors_never_delete_their_source(run, organism, tmp_path):
    import dataclasses
    import shutil

    from click.testing import CliRunner

    from latentreason.cli import main
    from latentreason.io import sha256_file
    from latentreason.manifest import Manifest

    out, _ = run
    r = tmp_path / "r"
    shutil.copytree(out, r)
    mine = r / "vectors" / "mine"
    mine.mkdir()
    for f in (r / "vectors").iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy(f, mine / f.name)
    before = {f.name: sha256_file(f) for f in mine.iterdir()}
    flags = ["--n-train", "30", "--n-dev", "8", "--n-test", "16", "--alphas", "2", "--thresholds", "0.5", "--seeds", "1", "--decoding", "greedy"]
    res = CliRunner().invoke(main, ["recover", "--out", str(r), "--vectors", str(mine), *flags])
    assert res.exit_code == 1 and "config.copied: (absent) → True" in res.output and "--force" in res.output, res.output
    assert {f.name: sha256_file(f) for f in mine.iterdir()} == before
    art = rec.build_artifacts(organism, r, dataclasses.replace(SMALL, vectors=str(mine)), progress=False, force=True)
    assert {f.name: sha256_file(f) for f in mine.iterdir()} == before
    assert Manifest.read(r / "vectors").config["copied"] and [v.name for v in art["vectors"]] == art["router"].strategies
    with pytest.raises(ValueError, match="are at resid_post.1, but this run steers at resid_post.0"):
        rec.build_artifacts(organism, r, dataclasses.replace(SMALL, vectors=str(mine), site="resid_post.0", router_site="resid_post.2"), progress=False, force=True)


@pytest.mark.slow
def test_run_config_reproduces_recover_byte_for_byte(tmp_path):
    from click.testing import CliRunner

    from latentreason.cli import main

    flags = ["--n-train", "30", "--n-dev", "8", "--n-test", "16", "--alphas", "2", "--thresholds", "0.5", "--seeds", "1", "--decoding", "greedy", "--no-controls"]
    res = CliRunner().invoke(main, ["recover", "--out", str(tmp_path / "a"), *flags])
    assert res.exit_code == 0, res.output
    (tmp_path / "small.toml").write_text(
        'pair = "organism"\n'
        f'out = "{tmp_path / "b"}"\n'
        "[recover]\nn_train = 30\nn_dev = 8\nn_test = 16\nalphas = [2]\nthresholds = [0.5]\nrandom_seeds = 1\ndecodings = [\"greedy\"]\ncontrols = false\n"
        "[quality]\nenabled = false\n[report]\nenabled = false\n"
    )
    res = CliRunner().invoke(main, ["run", str(tmp_path / "small.toml")])
    assert res.exit_code == 0, res.output
    a = (tmp_path / "a" / "recovery" / "recovery.json").read_bytes()
    assert a == (tmp_path / "b" / "recovery" / "recovery.json").read_bytes()
    res = CliRunner().invoke(main, ["run", str(tmp_path / "small.toml")])  # everything reused
    assert res.exit_code == 0 and (tmp_path / "b" / "recovery" / "recovery.json").read_bytes() == a, res.output


# ------------------------------------------------------------------ honest selection


def test_recovery_json_records_the_point_chosen_on_dev(run):
    from latentreason.recovery import points_dir

    out, result = run
    on_disk = json.loads((out / "recovery" / "recovery.json").read_text())
    chosen = on_disk["chosen"]["greedy"]
    assert chosen["selected_on"] == "dev" and chosen["router"] == "probe"
    assert chosen["alpha"] == on_disk["decodings"]["greedy"]["chosen_alpha"] and chosen["threshold"] == SMALL.threshold  # the threshold is configured, never picked on test
    flagged = [p for p in on_disk["points"] if p.get("chosen")]
    assert len(flagged) == 1 and all(flagged[0][k] == chosen[k] for k in ("alpha", "threshold", "budget", "acc", "recovery", "recovery_ci", "n", "decoding"))
    assert chosen["dev_acc"] == on_disk["decodings"]["greedy"]["dev_scores"][str(chosen["alpha"])]["acc"]
    point = json.loads((points_dir(out, SMALL) / chosen["file"]).read_text())
    assert len(point["correct"]) == chosen["n"] == SMALL.n_test


def test_points_directory_is_the_one_of_the_config_in_recovery_json(run):
    from latentreason.recovery import config_of, points_dir, result_points_dir

    out, _ = run
    on_disk = json.loads((out / "recovery" / "recovery.json").read_text())
    assert config_of(on_disk) == RecoverConfig(**json.loads(json.dumps(on_disk["config"])))
    assert config_of(on_disk).key() == SMALL.key()
    assert result_points_dir(out, on_disk) == points_dir(out, SMALL) and points_dir(out, SMALL).is_dir()
    with pytest.raises(ValueError, match="does not match this version"):
        config_of({"config": {**on_disk["config"], "no_such_option": 1}})


def test_test_problems_of_a_run_are_distinct(run, organism):
    from latentreason.recovery import evaluation_problems, points_dir
    from latentreason.rollouts import task_for_pair

    out, _ = run
    point = json.loads((points_dir(out, SMALL) / "base_greedy.json").read_text())
    assert len({e["problem"] for e in point["examples"]}) == SMALL.n_test
    dev, test = evaluation_problems(task_for_pair(organism), RecoverConfig(n_dev=200, n_test=600))
    assert len(set(test)) == 600 and len(set(dev)) == 200 and not set(dev) & set(test)  # drawn with replacement: 506 of 600


def test_a_task_with_too_few_distinct_problems_is_refused_before_any_compute(organism, tmp_path):
    import dataclasses

    short = dataclasses.replace(organism, task_config={**organism.task_config, "max_k": 2})  # about 30 test problems exist
    with pytest.raises(ValueError, match=r"distinct problems from split 'test', which has only \d+"):
        run_recovery(short, tmp_path / "run", dataclasses.replace(SMALL, n_test=40), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_pair_without_extra_models_says_why_no_intervention_is_placed(run, organism, tmp_path, caplog):
    import dataclasses
    import shutil

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    bare = dataclasses.replace(organism, extras={})  # what a preset naming other models gives
    cfg = dataclasses.replace(SMALL, controls=False, oracle=False, interventions=True)
    with caplog.at_level("WARNING", logger="latentreason.recovery"):
        result = run_recovery(bare, tmp_path / "r", cfg, progress=False)
    assert "interventions" not in result and "single_problem_rl" in result["interventions_skipped"]
    assert "no interventions placed" in caplog.text
    assert json.loads((tmp_path / "r" / "recovery" / "recovery.json").read_text())["interventions_skipped"] == result["interventions_skipped"]


def _point(router="probe", control=None, alpha=2.0, threshold=0.5, recovery=0.5, budget=0.05, seed=None, **kw):
    pt = {"router": router, "is_oracle": router == "oracle", "control": control, "alpha": alpha, "budget": budget, "acc": 0.5, "recovery": recovery, "recovery_ci": [recovery - 0.1, recovery + 0.1], "n": 16, "decoding": "greedy", **kw}
    if threshold is not None:
        pt["threshold"] = threshold
    if seed is not None:
        pt["seed"] = seed
    return pt


def test_plotted_curves_are_measured_points_never_a_maximum_over_test_points():
    from latentreason.plots import curves

    chosen = _point(alpha=1.0, recovery=0.6, chosen=True)
    points = [
        _point(alpha=0.5, recovery=0.2), chosen, _point(alpha=2.0, recovery=0.7),  # the alpha curve at the configured threshold 0.5
        _point(alpha=1.0, threshold=0.1, recovery=0.95, budget=0.3), _point(alpha=1.0, threshold=0.8, recovery=0.3, budget=0.01),  # the threshold sweep at the chosen alpha
        _point(alpha=2.0, threshold=0.1, recovery=0.99, budget=0.4),  # another alpha at another threshold: on neither curve
        _point(control="random_vectors", alpha=1.0, threshold=None, recovery=0.0, seed=0), _point(control="random_vectors", alpha=1.0, threshold=None, recovery=0.3, seed=1),
    ]
    result = {"points": points, "chosen": {"greedy": {k: chosen[k] for k in ("alpha", "threshold", "recovery", "budget")}}, "config": {"threshold": 0.5}}
    by_alpha = curves(result, "greedy", "alpha")
    assert [(p["alpha"], p["recovery"]) for p in by_alpha["probe"][0]] == [(0.5, 0.2), (1.0, 0.6), (2.0, 0.7)]  # at alpha 1 the chosen point, not the 0.95 at threshold 0.1
    assert sorted(run[0]["recovery"] for run in by_alpha["random_vectors"]) == [0.0, 0.3]  # one run per seed, not the largest
    by_budget = curves(result, "greedy", "budget")
    assert [(p["threshold"], p["recovery"]) for p in by_budget["probe"][0]] == [(0.8, 0.3), (0.5, 0.6), (0.1, 0.95)]
