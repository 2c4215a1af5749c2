"""Steering vectors on disk: both files are checked, and names never leave their directory."""

from __future__ import annotations

import json

import pytest
import torch

from latentreason.vectors import SteeringVector, load_vectors, save_vectors


def _vectors() -> list[SteeringVector]:
    g = torch.Generator().manual_seed(0)
    return [SteeringVector(name, torch.randn(8, generator=g), "resid_post.1", "diffmeans", "f" * 16, {"n_examples": 3}) for name in ("step", "check")]


def _edit(path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta, indent=2))


def test_saved_vectors_round_trip_exactly(tmp_path):
    save_vectors(_vectors(), tmp_path)
    back = load_vectors(tmp_path)
    assert list(back) == ["step", "check"]
    for v in _vectors():
        assert torch.equal(back[v.name].direction, v.direction) and back[v.name].site == v.site and back[v.name].provenance == v.provenance


@pytest.mark.parametrize("edit", [{"site": "resid_post.0"}, {"method": "probe"}, {"fingerprint": "0" * 16}, {"provenance": {"n_examples": 300}}])
def test_vector_json_edited_after_saving_is_refused(tmp_path, edit):
    save_vectors(_vectors(), tmp_path)
    _edit(tmp_path / "step.json", **edit)
    with pytest.raises(ValueError, match="step.json was edited after it was written"):
        SteeringVector.load(tmp_path / "step.json")
    with pytest.raises(ValueError, match="edited after it was written"):
        load_vectors(tmp_path)
    assert SteeringVector.load(tmp_path / "check.json").site.layer == 1  # the untouched one still loads


def test_reformatting_the_json_without_changing_it_still_loads(tmp_path):
    save_vectors(_vectors(), tmp_path)
    meta = json.loads((tmp_path / "step.json").read_text())
    (tmp_path / "step.json").write_text(json.dumps(dict(reversed(list(meta.items())))))  # other key order, no indent
    assert SteeringVector.load(tmp_path / "step.json").name == "step"


def test_vector_whose_tensor_file_carries_no_metadata_hash_is_refused(tmp_path):
    from safetensors.torch import save_file

    from latentreason.io import sha256_file

    save_vectors(_vectors(), tmp_path)
    save_file({"direction": torch.ones(8)}, str(tmp_path / "step.safetensors"))  # as an older latentreason (or anyone) would write it
    _edit(tmp_path / "step.json", sha256=sha256_file(tmp_path / "step.safetensors"))
    with pytest.raises(ValueError, match="carries no hash of step.json"):
        SteeringVector.load(tmp_path / "step.json")


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "sub/x", "..", "", "/tmp/x", ".hidden", "a\\b"])
def test_index_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    inner = tmp_path / "vectors"
    save_vectors(_vectors(), inner)
    SteeringVector("x", torch.ones(8), "resid_post.1", "manual", "f" * 16).save(tmp_path)  # a valid vector just outside
    (inner / "index.json").write_text(json.dumps({"vectors": ["step", name]}))
    with pytest.raises(ValueError, match="not a plain file name"):
        load_vectors(inner)


def test_saving_a_vector_whose_name_leaves_the_directory_is_refused(tmp_path):
    v = SteeringVector("../escape", torch.ones(8), "resid_post.1", "manual", "f" * 16)
    with pytest.raises(ValueError, match="not a plain file name"):
        save_vectors([v], tmp_path / "vectors")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "escape.safetensors").exists()
