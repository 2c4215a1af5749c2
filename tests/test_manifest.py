"""Manifests: written sealed, and an edited one is refused on read."""

from __future__ import annotations

import json

import pytest

from latentreason.manifest import MANIFEST_NAME, Manifest


def _manifest(tmp_path) -> Manifest:
    m = Manifest(kind="vectors", config={"site": "resid_post.1", "alpha": 0.5}, models={"base": {"path": "b", "fingerprint": "f" * 16}}, files={"step.json": "0" * 64})
    m.write(tmp_path)
    return m


def test_manifest_round_trips(tmp_path):
    m = _manifest(tmp_path)
    assert Manifest.read(tmp_path, kind="vectors") == m


@pytest.mark.parametrize("key,value", [("config", {"site": "resid_post.0", "alpha": 0.5}), ("models", {"base": {"path": "b", "fingerprint": "0" * 16}}), ("files", {"step.json": "1" * 64})])
def test_manifest_edited_after_writing_is_refused(tmp_path, key, value):
    _manifest(tmp_path)
    d = json.loads((tmp_path / MANIFEST_NAME).read_text())
    d[key] = value
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(ValueError, match="was edited after it was written"):
        Manifest.read(tmp_path)


def test_manifest_without_its_seal_is_refused(tmp_path):
    _manifest(tmp_path)
    d = json.loads((tmp_path / MANIFEST_NAME).read_text())
    d.pop("manifest_sha256")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(ValueError, match="carries no 'manifest_sha256'"):
        Manifest.read(tmp_path)
