"""Loading pairs and models: weights are checked at load, and every failure is one clear line."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from click.testing import CliRunner

from latentreason.cli import main
from latentreason.organism import default_pair_dir
from latentreason.pair import ModelUnavailableError, load_model, load_pair


@pytest.fixture
def pair_copy(tmp_path):
    """A copy of the shipped organism pair that a test may damage."""
    return shutil.copytree(default_pair_dir(), tmp_path / "pair")


def _flip_byte(path, offset_from_end: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01  # inside the tensor data: the header still parses
    path.write_bytes(bytes(data))


def _preset(tmp_path, model: str, name: str = "p") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'task = "arith"\n[base]\nmodel = "{model}"\n[post_rl]\nmodel = "{model}"\n')
    return str(path)


def _one_line_error(res) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
    return res.output


def _save_tiny(make_tiny, d, pickle: bool = False):
    from latentreason.organism.tokenizer import build_tokenizer

    model = make_tiny("qwen2")
    d.mkdir(parents=True)
    model.config.save_pretrained(d)
    if pickle:
        torch.save(model.state_dict(), d / "pytorch_model.bin")
    else:
        model.save_pretrained(d)
    build_tokenizer().save_pretrained(d)
    return model


def test_bit_flipped_organism_weights_are_refused_at_load(pair_copy):
    _flip_byte(pair_copy / "post_rl" / "model.safetensors")
    with pytest.raises(ValueError, match=r"post_rl/model.safetensors is corrupt or modified: its sha256 .* differs from the one in pair.json"):
        load_pair(pair_copy)


def test_organism_weights_missing_from_pair_json_hashes_are_refused(pair_copy):
    man = json.loads((pair_copy / "pair.json").read_text())
    man["hashes"].pop("base/model.safetensors")
    (pair_copy / "pair.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="not listed in pair.json's hashes"):
        load_pair(pair_copy)


def test_pair_json_model_paths_outside_the_pair_directory_are_refused(pair_copy, tmp_path):
    shutil.copytree(pair_copy / "base", tmp_path / "elsewhere")
    man = json.loads((pair_copy / "pair.json").read_text())
    man["models"]["base"] = "../elsewhere"
    (pair_copy / "pair.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="not a directory name inside the pair directory"):
        load_pair(pair_copy)


def test_intact_copy_of_the_organism_loads(pair_copy, organism):
    assert load_pair(pair_copy).fingerprint("post_rl") == organism.fingerprint("post_rl")


def test_truncated_safetensors_weights_give_one_line_error(make_tiny, tmp_path):
    d = tmp_path / "m"
    _save_tiny(make_tiny, d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.safetensors holds \d+ bytes but its header needs \d+\. It is truncated or corrupt"):
        load_model(str(d))
    out = _one_line_error(CliRunner().invoke(main, ["rollouts", "--pair", _preset(tmp_path, str(d)), "--n", "1", "--out", str(tmp_path / "run")]))
    assert "truncated" in out


def test_pickle_only_model_directory_is_refused_unless_asked(make_tiny, tmp_path):
    d = tmp_path / "m"
    model = _save_tiny(make_tiny, d, pickle=True)
    with pytest.raises(ValueError, match=r"holds only pickle weights \(pytorch_model.bin\); latentreason loads safetensors only"):
        load_model(str(d))
    out = _one_line_error(CliRunner().invoke(main, ["rollouts", "--pair", _preset(tmp_path, str(d)), "--n", "1", "--out", str(tmp_path / "run")]))
    assert "allow_pickle" in out
    back = load_model(str(d), allow_pickle=True)  # explicitly asked: torch's weights_only loader
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(back(ids).logits, model(ids).logits)


@pytest.mark.parametrize("offline", [True, False])
def test_hub_id_that_cannot_be_fetched_fails_fast_with_one_message(tmp_path, monkeypatch, offline):
    repo = "latentreason-tests/no-such-model-anywhere"
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.time()
    out = _one_line_error(CliRunner().invoke(main, ["rollouts", "--pair", _preset(tmp_path, repo), "--n", "1", "--out", str(tmp_path / "run")]))
    assert time.time() - t0 < 10
    assert repo in out and "not a local directory" in out
    assert ("HF_HUB_OFFLINE is set" in out) if offline else ("cannot be reached" in out or "no such model" in out)
    with pytest.raises(ModelUnavailableError, match=repo):
        load_model(repo)
