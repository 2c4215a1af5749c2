"""``latentreason run CONFIG.toml``: the config file, and that it means what ``recover`` means."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from latentreason.cli import main
from latentreason.pipeline import QualityConfig, RunConfig
from latentreason.recovery import RecoverConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "organism.toml"


def test_the_example_config_is_the_recover_defaults():
    cfg = RunConfig.from_toml(EXAMPLE)
    assert cfg.recover == RecoverConfig() and cfg.pair == "organism" and cfg.out == "runs/organism"
    assert cfg.quality.enabled and "hybrid" in cfg.quality.generators and cfg.report.rollouts == 3


def test_recover_flag_defaults_are_the_configs_defaults():
    from latentreason.cli.recover import _floats, recover

    d = recover.make_context("recover", ["--out", "runs/x"]).params  # what the command receives with no flags
    flags = RecoverConfig(
        n_train=d["n_train"], n_dev=d["n_dev"], n_test=d["n_test"], site=d["site"], router_site=d["router_site"], taxonomy=d["taxonomy"], method=d["method"],
        alphas=_floats(d["alphas"]), thresholds=_floats(d["thresholds"]), decodings=tuple(d["decoding"].split(",")), random_seeds=d["random_seeds"],
        controls=not d["no_controls"], oracle=not d["no_oracle"], max_new_tokens=d["max_new_tokens"], batch_size=d["batch_size"], seed=d["seed"], task=d["task"], data=d["data"],
    )
    assert flags == RecoverConfig() and flags.key() == RunConfig.from_toml(EXAMPLE).recover.key()


def test_unknown_keys_are_refused_naming_the_allowed_ones(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('pair = "organism"\nsize = 3\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['size'\]; allowed at the top level: \['out', 'pair'\] and the tables \['quality', 'recover', 'report'\]"):
        RunConfig.from_toml(p)
    p.write_text("[recover]\nn_trian = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_trian'\] in \[recover\]; allowed: \[.*'n_train'.*\]"):
        RunConfig.from_toml(p)
    p.write_text("[quality]\ngenerator = ['base']\n")
    with pytest.raises(ValueError, match=r"in \[quality\]; allowed: \[.*'generators'"):
        RunConfig.from_toml(p)


def test_values_are_typed_as_the_fields_say(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[recover]\nalphas = [1, 2]\nthreshold = 1\nn_train = 30\n")
    cfg = RunConfig.from_toml(p)
    assert cfg.recover.alphas == (1.0, 2.0) and isinstance(cfg.recover.alphas[0], float) and cfg.recover.threshold == 1.0
    for bad, msg in [("n_train = '30'", "recover.n_train = '30' must be an integer"), ("alphas = 2", "must be a list of numbers"), ("controls = 1", "must be true or false"),
                     ("n_train = 0", "n_train=0 must be a positive"), ("alphas = [1, 'x']", r"recover.alphas\[1\] = 'x' must be a finite number")]:
        p.write_text(f"[recover]\n{bad}\n")
        with pytest.raises(ValueError, match=msg):
            RunConfig.from_toml(p)
    with pytest.raises(ValueError, match="generators is empty"):
        QualityConfig(generators=())


def test_run_cli_names_bad_files_without_a_traceback(tmp_path):
    res = CliRunner().invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.toml").write_text("pair = \n")
    res = CliRunner().invoke(main, ["run", str(tmp_path / "bad.toml")])
    assert res.exit_code == 1 and "not valid TOML" in res.output
    (tmp_path / "noout.toml").write_text('pair = "organism"\n')
    res = CliRunner().invoke(main, ["run", str(tmp_path / "noout.toml")])
    assert res.exit_code == 1 and "No run directory" in res.output
