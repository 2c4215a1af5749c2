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
