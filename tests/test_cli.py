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

import pytest


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
