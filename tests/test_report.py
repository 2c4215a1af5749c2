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
