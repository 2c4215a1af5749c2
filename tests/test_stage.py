"""Stages: manifests from the start, reuse / resume / refusal with the differing keys, locks, and nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from latentreason.cli import main
from latentreason.io import read_json, write_json
from latentreason.manifest import Manifest, UnfinishedArtifactError
from latentreason.stage import (
    DirectoryLocked,
    ForeignDirectory,
    StageMismatch,
    WrongArtifact,
    clear_run,
    differences,
    locked,
    open_run,
    open_stage,
)

SITE = "resid_post.1"


def make_stage(d, config, kind="thing", files=("a.json",), inputs=None):
    with open_stage(d, kind, config, inputs or {"seed": 0}, owns=["*.json"]) as st:
        if st.state != "reuse":
            for n in files:
                write_json(st.path(n), {"n": n, **config})
            st.complete(files)
        return st


def test_differences_name_dotted_paths_with_old_and_new_values():
    old = {"config": {"site": "resid_post.1", "opt": {"lr": 3e-3}, "gone": 1}, "inputs": {"seed": 0}}
    new = {"config": {"site": "resid_post.0", "opt": {"lr": 1e-3}, "added": 2}, "inputs": {"seed": 0}}
    assert differences(old, new) == [("config.added", "(absent)", 2), ("config.gone", 1, "(absent)"), ("config.opt.lr", 3e-3, 1e-3), ("config.site", "resid_post.1", "resid_post.0")]


def test_a_stage_writes_its_manifest_when_it_starts_and_readers_refuse_it_until_complete(tmp_path):
    d = tmp_path / "s"
    with open_stage(d, "thing", {"k": 1}, {"seed": 0}, owns=["*.json"]) as st:
        assert st.state == "new"
        man = Manifest.read(d, allow_running=True)
        assert man.status == "running" and man.config == {"k": 1} and man.inputs == {"seed": 0}
        with pytest.raises(UnfinishedArtifactError, match="unfinished thing artifact"):
            Manifest.read(d)
        assert (d / ".lock").exists()
        write_json(st.path("a.json"), {})
        st.complete(["a.json"])
    man = Manifest.read(d, kind="thing")
    assert man.status == "complete" and set(man.files) == {"a.json"} and not (d / ".lock").exists()


def test_same_settings_reuse_or_resume_and_other_settings_are_refused_naming_them(tmp_path):
    d = tmp_path / "s"
    make_stage(d, {"site": "resid_post.1", "k": 3})
    assert make_stage(d, {"site": "resid_post.1", "k": 3}).state == "reuse"
    with pytest.raises(StageMismatch, match=r"other settings: config.site: 'resid_post.1' → 'resid_post.0'.*--force.*another --out"):
        make_stage(d, {"site": "resid_post.0", "k": 3})
    with pytest.raises(StageMismatch, match=r"inputs.seed: 0 → 1"):
        make_stage(d, {"site": "resid_post.1", "k": 3}, inputs={"seed": 1})
    with open_stage(tmp_path / "r", "thing", {"k": 1}, owns=["*.json"]):
        pass  # interrupted: never completed
    with open_stage(tmp_path / "r", "thing", {"k": 1}, owns=["*.json"]) as st:
        assert st.state == "resume"


def test_force_removes_only_the_files_the_stage_wrote(tmp_path):
    d = tmp_path / "s"
    make_stage(d, {"k": 1}, files=("a.json", "b.json"))
    (d / "mine.txt").write_text("the user's")
    st = None
    with open_stage(d, "thing", {"k": 2}, {"seed": 0}, owns=["*.json"], force=True) as st:
        assert st.state == "new" and not (d / "a.json").exists() and not (d / "b.json").exists()
        write_json(st.path("c.json"), {})
        st.complete(["c.json"])
    assert (d / "mine.txt").read_text() == "the user's"
    assert set(Manifest.read(d).files) == {"c.json"}


def test_another_kind_or_a_foreign_directory_is_refused_even_with_force(tmp_path):
    make_stage(tmp_path / "s", {"k": 1}, kind="activations")
    with pytest.raises(WrongArtifact, match="holds a 'activations' artifact, not 'taxonomy'"):
        make_stage(tmp_path / "s", {"k": 1}, kind="taxonomy")
    with pytest.raises(WrongArtifact):
        with open_stage(tmp_path / "s", "taxonomy", {}, owns=["*"], force=True):
            pass
    assert Manifest.read(tmp_path / "s").kind == "activations"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(ForeignDirectory, match=r"holds no latentreason artifact \(notes.txt\)"):
        with open_stage(tmp_path / "user", "rollouts", {}, owns=["*"], force=True):
            pass
    assert (tmp_path / "user" / "notes.txt").read_text() == "mine"


HOLD = """
import sys, time
from latentreason.stage import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_fails_fast_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    d = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        t0 = time.time()
        with pytest.raises(DirectoryLocked, match=rf"another process \(pid {proc.pid}, command .*-c.*since "):
            with locked(d):
                pass
        assert time.time() - t0 < 1.0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert json.loads((d / ".lock").read_text())["pid"] == proc.pid  # the dead holder's lock file is still there
        with locked(d):
            assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
        assert not (d / ".lock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_fresh_run_removes_only_its_stages_files_and_refuses_a_folder_that_is_no_run(tmp_path):
    run = tmp_path / "run"
    with open_run(run) as rd:
        make_stage(rd.vectors, {"k": 1}, kind="vectors")
        make_stage(rd.points("abc"), {"k": 1}, kind="points")
    (run / "vectors" / "mine.txt").write_text("the user's")
    with open_run(run, fresh=True) as rd:
        assert not (rd.vectors / "manifest.json").exists() and (rd.vectors / "mine.txt").exists()
        assert not rd.points("abc").exists()
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(ForeignDirectory, match="is not a latentreason run: it holds thesis.tex"):
        with open_run(user, fresh=True):
            pass
    assert (user / "thesis.tex").read_text() == "years of work"


def test_demo_fresh_over_a_foreign_directory_is_refused_and_the_users_file_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = CliRunner().invoke(main, ["demo", "--fresh", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "is not a latentreason run" in res.output and "Traceback" not in res.output, res.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- CLI stages on a small real run


@pytest.fixture(scope="module")
def run(organism, tmp_path_factory):
    """A run directory with rollouts and a cache of the organism (10 problems)."""
    out = tmp_path_factory.mktemp("run")
    r = CliRunner().invoke(main, ["rollouts", "--out", str(out), "--n", "10", "--max-new-tokens", "64"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["cache", "--rollouts", str(out), "--sites", f"{SITE},resid_post.2", "--out", str(out / "activations")])
    assert r.exit_code == 0, r.output
    return out


def test_rollouts_with_other_settings_are_refused_and_the_same_ones_reused(run):
    before = (run / "rollouts" / "rollouts.jsonl").stat().st_mtime_ns
    res = CliRunner().invoke(main, ["rollouts", "--out", str(run), "--n", "10", "--max-new-tokens", "64"])
    assert res.exit_code == 0 and "reused" in res.output, res.output
    res = CliRunner().invoke(main, ["rollouts", "--out", str(run), "--n", "12", "--max-new-tokens", "64"])
    assert res.exit_code == 1 and "config.n: 10 → 12" in res.output and "--force" in res.output, res.output
    assert (run / "rollouts" / "rollouts.jsonl").stat().st_mtime_ns == before


def test_taxonomy_and_extract_refuse_an_out_holding_another_kind(run):
    from latentreason.cache import ActivationCache
    from latentreason.rollouts import read_rollouts

    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(run / "activations"), "--site", SITE, "--k", "2", "--out", str(run / "activations")])
    assert res.exit_code == 1 and "holds a 'activations' artifact, not 'taxonomy'" in res.output, res.output
    ActivationCache.open(run / "activations").verify()  # still whole
    res = CliRunner().invoke(main, ["extract", "--cache", str(run / "activations"), "--taxonomy", "planted", "--site", SITE, "--out", str(run / "rollouts")])
    assert res.exit_code == 1 and "holds a 'rollouts' artifact, not 'vectors'" in res.output, res.output
    read_rollouts(run)  # still readable


def test_extract_hashes_only_the_files_it_wrote(run, tmp_path):
    d = tmp_path / "vectors"
    args = ["extract", "--cache", str(run / "activations"), "--taxonomy", "planted", "--site", SITE, "--out", str(d)]
    assert CliRunner().invoke(main, args).exit_code == 0
    (d / "notes.json").write_text("{}")  # not the stage's
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "reused" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--method", "probe"])
    assert res.exit_code == 1 and "config.method: 'diffmeans' → 'probe'" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--method", "probe", "--force"])
    assert res.exit_code == 0, res.output
    man = Manifest.read(d, kind="vectors")
    assert "notes.json" not in man.files and (d / "notes.json").exists() and man.config["method"] == "probe"
    names = read_json(d / "index.json")["vectors"]
    assert set(man.files) == {"index.json", *(f"{n}{e}" for n in names for e in (".json", ".safetensors"))}


def test_two_cache_writers_into_one_out_one_fails_fast_naming_the_holder(organism, run, tmp_path):
    out = tmp_path / "act"
    cmd = [sys.executable, "-c", "from latentreason.cli import main; main()", "cache", "--rollouts", str(run), "--sites", SITE, "--out", str(out), "--batch-size", "1", "--shard-tokens", "50"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / ".lock").exists() or not (out / "manifest.json").exists():
            assert proc.poll() is None and time.time() < deadline, "the first cache run ended before it was seen writing"
            time.sleep(0.005)
        res = CliRunner().invoke(main, ["cache", "--rollouts", str(run), "--sites", "resid_post.0", "--out", str(out)])
        still_running = proc.poll() is None
        assert res.exit_code == 1 and f"being written by another process (pid {proc.pid}" in res.output and "cache" in res.output, res.output
        assert still_running, "the first run finished too soon for the check to mean anything"
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    from latentreason.cache import ActivationCache

    assert ActivationCache.open(out).sites == [SITE]  # one writer's cache, not a mix
    res = CliRunner().invoke(main, ["cache", "--rollouts", str(run), "--sites", "resid_post.0", "--out", str(out)])
    assert res.exit_code == 1 and "config.sites: ['resid_post.1'] → ['resid_post.0']" in res.output, res.output
