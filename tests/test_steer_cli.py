"""Tests for ``latentreason steer``: the one-shot JSON form in-process, the prompt loop in a real terminal (pexpect)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from _vectors import STEP_ALPHA

from latentreason.cli import main


@pytest.fixture(scope="module")
def pair_spec() -> str:
    spec = os.environ.get("LATENTREASON_TEST_PAIR")  # e.g. a freshly trained pair directory
    if spec:
        return spec
    from latentreason.organism import default_pair_dir

    return str(default_pair_dir())


@pytest.fixture(scope="module")
def vector_dir(pair_spec, tmp_path_factory) -> Path:
    from _vectors import organism_vectors

    from latentreason.pair import load_pair
    from latentreason.vectors import save_vectors

    return save_vectors(organism_vectors(load_pair(pair_spec)), tmp_path_factory.mktemp("vectors"))


def invoke(*args: str):
    return CliRunner().invoke(main, ["steer", *args])


def test_steer_json_prints_both_completions_and_the_steered_positions(pair_spec, vector_dir):
    res = invoke("--pair", pair_spec, "--vectors", str(vector_dir), "--prompt", "3+4*2-7", "--vector", "step", "--alpha", str(STEP_ALPHA), "--at", "first", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["prompt_text"].strip() == "3+4*2-7="
    assert out["unsteered"].startswith("A:")
    assert out["steered"].startswith("S:")  # the first operation is a sum
    assert out["steered_positions"] == [len(out["prompt_text"])]  # the last prompt token (BOS is position 0)
    assert out["steered_tokens"] == [0]
    assert out["vectors"] == [{"name": "step", "site": "resid_post.1", "alpha": STEP_ALPHA}]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vector", "nope"], "Unknown vector 'nope'"),
        (["--at", "nowhere"], "Unknown schedule 'nowhere'"),
        (["--alpha", "x"], "'x' is not a valid float"),
        (["--at", "positions 99"], "never reached"),
    ],
)
def test_steer_bad_arguments_give_one_line_errors_without_traceback(pair_spec, vector_dir, args, message):
    res = invoke("--pair", pair_spec, "--vectors", str(vector_dir), "--prompt", "3+4", "--max-new-tokens", "4", *args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_steer_refuses_a_prompt_longer_than_the_position_window(pair_spec, vector_dir):
    res = invoke("--pair", pair_spec, "--vectors", str(vector_dir), "--prompt", "1+" * 150 + "1", "--max-new-tokens", "4")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "is longer than the model's position window (256 tokens" in res.output and "Shorten it" in res.output


def test_steer_refuses_a_directory_without_vectors(pair_spec, tmp_path):
    res = invoke("--pair", pair_spec, "--vectors", str(tmp_path), "--prompt", "3+4")
    assert res.exit_code == 1
    assert "no index.json" in res.output


def test_steer_prompt_loop_in_a_terminal(pair_spec, vector_dir):
    """A person's session: prompt, raise alpha, see the steered completion change, mistype, quit."""
    pexpect = pytest.importorskip("pexpect")
    exe = str(Path(sys.executable).parent / "latentreason")
    child = pexpect.spawn(exe, ["steer", "--pair", pair_spec, "--vectors", str(vector_dir), "--at", "first", "--alpha", "0"], encoding="utf-8", timeout=90, dimensions=(40, 200), env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        child.expect_exact("steer> ")
        assert "alpha=0 at=first" in child.before

        child.sendline("3+4*2-7")
        child.expect_exact("steer> ")
        first = child.before
        assert "unsteered" in first and "A:" in first
        assert "S:" not in first  # alpha 0: the steered column equals the unsteered one

        child.sendline(f":alpha {STEP_ALPHA:g}")
        child.expect_exact("steer> ")
        assert f"alpha={STEP_ALPHA:g}" in child.before

        child.sendline("3+4*2-7")
        child.expect_exact("steer> ")
        second = child.before
        assert "\x1b[1;30;43mS\x1b[0m:" in second  # the steered first token, highlighted in colour on a TTY

        child.sendline(":list")
        child.expect_exact("steer> ")
        assert "* step " in child.before and "random" in child.before

        bad_commands = [
            (":bogus", "error: Unknown command ':bogus'"),
            (":use nope", "error: Unknown vector 'nope'"),
            (":alpha lots", "error: alpha must be a number"),
            (":at nowhere", "error: Unknown schedule 'nowhere'"),
            (":site resid_post.0", "error: No vector 'step' at resid_post.0"),
        ]
        for bad, message in bad_commands:
            child.sendline(bad)
            child.expect_exact("steer> ")
            lines = [l for l in child.before.replace("\r", "").split("\n") if l.strip()]
            assert lines[1:] == [lines[1]] and lines[1].startswith(message), child.before  # echoed command, then one line
            assert "Traceback" not in child.before

        child.sendline(":quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_steer_json_is_strict_and_site_takes_a_depth_fraction(pair_spec, vector_dir):
    from latentreason.cli.steer import Session
    from latentreason.pair import load_pair
    from latentreason.vectors import load_vectors

    res = invoke("--pair", pair_spec, "--vectors", str(vector_dir), "--prompt", "3+4", "--max-new-tokens", "4", "--json")
    assert res.exit_code == 0, res.output
    json.loads(res.output, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
    session = Session(load_pair(pair_spec), "base", load_vectors(vector_dir), ["step"])
    assert "step (resid_post.1)" in session.command(":site resid_post@0.5")  # floor(0.5 * 3 layers)
    assert "step@resid_post.2 (resid_post.2)" in session.command(":site resid_post@1")  # at most the last layer
    with pytest.raises(ValueError, match=r"No vector 'step' at resid_post\.0"):
        session.command(":site resid_post@0.2")
    with pytest.raises(ValueError, match="depth fraction"):
        session.command(":site resid_post@3")
