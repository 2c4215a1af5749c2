import json
import re
import shutil
import subprocess

import pytest

from latentreason.recovery import RecoverConfig, run_recovery
from latentreason.report import build_report, highlight

SMALL = RecoverConfig(n_train=30, n_dev=8, n_test=16, alphas=(2.0,), thresholds=(0.5,), random_seeds=1, decodings=("greedy",), interventions=False, n_boot=200)


@pytest.fixture(scope="module")
def report(organism, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_recovery(organism, out, SMALL, progress=False)
    return build_report(out)


def _headlines(page: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m)) for m in re.findall(r'<p class="headline"([^>]*)>', page)]


def _copy_run(report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report.parent, run)
    (run / "report.html").unlink()
    return run


def test_report_headline_is_the_point_chosen_on_dev(report):
    chosen = json.loads((report.parent / "recovery" / "recovery.json").read_text())["chosen"]["greedy"]
    (head,) = _headlines(report.read_text())
    assert head["decoding"] == "greedy" and int(head["n"]) == chosen["n"]
    for key in ("alpha", "threshold", "budget", "recovery"):
        assert float(head[key]) == pytest.approx(chosen[key], abs=1e-6), key
    assert (float(head["recovery-lo"]), float(head["recovery-hi"])) == pytest.approx(tuple(chosen["recovery_ci"]), abs=1e-6)


def test_headline_never_picks_a_better_test_point_over_the_dev_choice(report, tmp_path):
    run = _copy_run(report, tmp_path)
    path = run / "recovery" / "recovery.json"
    result = json.loads(path.read_text())
    chosen = result["chosen"]["greedy"]
    better = {**chosen, "alpha": 4.0, "recovery": 1.5, "recovery_ci": [1.4, 1.6], "budget": 0.01, "is_oracle": False, "control": None}  # a test point dev did not choose
    better.pop("file")
    result["points"].append(better)
    path.write_text(json.dumps(result))
    page = build_report(run).read_text()
    (head,) = _headlines(page)
    assert float(head["alpha"]) == chosen["alpha"] and float(head["recovery"]) == pytest.approx(chosen["recovery"])
    assert "1.50 [1.40, 1.60]" not in page.split("<h2>Recovery curves</h2>")[0]  # only in the table of all points


def test_report_reads_the_points_of_the_config_that_made_recovery_json(report, tmp_path):
    run = _copy_run(report, tmp_path)
    other = run / "recovery" / "points" / "zzzzzzzzzzzz"  # another config's points, sorting after this one's
    other.mkdir()
    for stem in ("base_greedy", "post_rl_greedy"):
        (other / f"{stem}.json").write_text(json.dumps({"correct": [True], "examples": [{"problem": "1+1", "completion": "A:FOREIGN-CONFIG\n", "steered": []}]}))
    page = build_report(run).read_text()
    assert "FOREIGN-CONFIG" not in page
    assert page.count('<pre class="roll">') >= 2


PAYLOAD = '<script>alert(1)</script><img src=x onerror=alert(2)>'


def _taint(obj):
    """Every leaf of a JSON value replaced by PAYLOAD, and a PAYLOAD key added to every object."""
    if isinstance(obj, dict):
        out = {k: _taint(v) for k, v in obj.items()}
        if obj:
            out[PAYLOAD] = _taint(next(iter(obj.values())))
        return out
    if isinstance(obj, list):
        return [_taint(v) for v in obj] or [PAYLOAD]
    return PAYLOAD


def test_every_field_of_the_run_files_is_escaped_in_the_html(report, tmp_path):
    run = _copy_run(report, tmp_path)
    rec = run / "recovery" / "recovery.json"
    (run / "quality").mkdir()
    (run / "taxonomy").mkdir()
    quality = {"generators": {"base": {"n": 16, "acc": 0.5, "acc_ci": [0.3, 0.7], "reasoning_rate": 0.1, "reasoning_rate_ci": [0.0, 0.2], "early_answering": {"aoc": 0.2, "aoc_ci": [0.1, 0.3]}, "filler": {"acc": 0.4, "acc_ci": [0.2, 0.6]}, "info_gain": {"per_step": 0.3, "per_step_ci": [0.2, 0.4]}}}}
    metrics = {"method": "kmeans", "k": 4, "site": "resid_post.1", "silhouette": 0.3, "stability_ari": 0.9, "ari_planted": 0.8, "nmi_planted": 0.7}
    clusters = {"clusters": [{"cluster": 0, "label": "step", "size": 12}, {"cluster": 1, "label": "answer", "size": 7}]}
    clean = {"quality": quality, "metrics": metrics, "clusters": clusters}
    files = {"quality": run / "quality" / "quality.json", "metrics": run / "taxonomy" / "metrics.json", "clusters": run / "taxonomy" / "clusters.json"}
    for name, f in files.items():
        f.write_text(json.dumps(clean[name]))
    page = build_report(run).read_text()
    assert "kmeans" in page and "12 sentences" in page and "early-answering" in page  # the sections are drawn from these files
    rec.write_text(json.dumps(_taint(json.loads(rec.read_text()))))
    for name, f in files.items():
        f.write_text(json.dumps(_taint(clean[name])))
    page = build_report(run).read_text()
    assert page.count("<script") == 1  # the report's own self-check, nothing injected
    assert "<img src=x" not in page and "&lt;script&gt;alert(1)" in page


def test_fields_that_used_to_reach_the_html_raw_are_escaped(report, tmp_path):
    run = _copy_run(report, tmp_path)
    rec = run / "recovery" / "recovery.json"
    result = json.loads(rec.read_text())
    result["n"] = PAYLOAD
    result["points"][0]["n"] = PAYLOAD
    result["interventions"] = [{"name": "single_problem_rl", "decoding": "greedy", "acc": 0.5, "recovery": 0.1, "recovery_ci": [0.0, 0.2], "n": PAYLOAD}]
    rec.write_text(json.dumps(result))
    (run / "quality").mkdir()
    (run / "quality" / "quality.json").write_text(json.dumps({"generators": {"base": {"n": PAYLOAD}}}))
    (run / "taxonomy").mkdir()
    (run / "taxonomy" / "metrics.json").write_text(json.dumps({"method": "kmeans"}))
    (run / "taxonomy" / "clusters.json").write_text(json.dumps({"clusters": [{"label": "step", "size": PAYLOAD}]}))
    page = build_report(run).read_text()
    assert page.count("<script") == 1 and page.count("&lt;script&gt;alert(1)") == 5


def test_highlight_marks_steered_tokens_and_names_the_vector():
    html = highlight(["S", ":", "<x>"], [(0, "step"), (2, "check")])
    assert html.startswith('<mark class="s" title="steered: step">S</mark>:')
    assert '<mark class="s" title="steered: check">&lt;x&gt;</mark>' in html


def test_report_is_self_contained_and_labels_the_oracle(report):
    page = report.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the report must not load anything from the network"
    assert page.count("data:image/png;base64,") >= 2
    assert "ORACLE" in page and "random_vectors" in page and 'class="s"' in page


def test_report_without_recovery_names_the_missing_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="latentreason recover"):
        build_report(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _open_in_chromium(report, tmp_path):
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=1", "--virtual-time-budget=5000", "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-status="ok"' in run.stdout, run.stderr[-2000:]
    assert int(re.search(r'data-figures="(\d+)"', run.stdout).group(1)) >= 2
    assert "CONSOLE" not in run.stderr, [l for l in run.stderr.splitlines() if "CONSOLE" in l]
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2000", f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 50_000  # figures drawn, not a blank page


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it when apt-get works)")


@needs_chromium
def test_report_opens_in_headless_chromium_without_console_errors(report, tmp_path):
    _open_in_chromium(report, tmp_path)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    import dataclasses

    from latentreason.demo import DEMO_CONFIG, run_demo

    small = dataclasses.replace(DEMO_CONFIG, n_train=40, n_dev=10, n_test=24, alphas=(2.0,), thresholds=(0.5,), random_seeds=1, n_boot=200)
    return run_demo(tmp_path_factory.mktemp("demo"), small, progress=False)


def test_demo_runs_the_whole_pipeline_into_one_report(demo_report):
    page = demo_report.read_text()
    for section in ("Recovery curves", "Reasoning quality", "Taxonomy", "Rollouts", "single_problem_sft", "ORACLE"):
        assert section in page, section
    assert "ari_planted" in page  # the discovered taxonomy is checked against the planted strategies
    assert "Cheap interventions" in page and "single_problem_rl" in page


@needs_chromium
def test_demo_report_opens_in_headless_chromium_without_console_errors(demo_report, tmp_path):
    _open_in_chromium(demo_report, tmp_path)
