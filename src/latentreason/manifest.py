"""One small JSON manifest per artifact: what produced it, from what, and the hashes of its files."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentreason import __version__
from latentreason.io import json_sha256, read_json, sha256_file, write_json

MANIFEST_NAME = "manifest.json"
SEAL = "manifest_sha256"  # sha256 of the manifest's other keys (latentreason.io.json_sha256)


@dataclass(frozen=True)
class Manifest:
    """Provenance of one artifact directory.

    ``models`` maps a role (``base``, ``post_rl``) to ``{"path": ..., "fingerprint": ...}``;
    ``files`` maps file names relative to the directory to their sha256.
    """

    kind: str  # e.g. "rollouts", "activations", "taxonomy", "vectors", "router"
    config: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.json``, sealed with the sha256 of its own content (checked by :meth:`read`)."""
        d = dataclasses.asdict(self)
        return write_json(Path(directory) / MANIFEST_NAME, {**d, SEAL: json_sha256(d)})

    @classmethod
    def read(cls, directory: str | os.PathLike, kind: str | None = None) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{directory} has no {MANIFEST_NAME}: it is not a finished latentreason artifact. Re-run the stage that writes it.")
        d = read_json(path)
        if not isinstance(d, dict):
            raise ValueError(f"{path} is not a latentreason manifest (not a JSON object). Re-run the stage that writes it.")
        seal = d.pop(SEAL, None)
        if seal is None:
            raise ValueError(f"{path} carries no {SEAL!r} hash (written by an older latentreason, or by hand), so edits to it cannot be detected. Re-run the stage that writes it.")
        if json_sha256(d) != seal:
            raise ValueError(f"{path} was edited after it was written (its content no longer matches its {SEAL!r}). Restore it, or re-run the stage that writes it.")
        known = {f.name for f in dataclasses.fields(cls)}
        m = cls(**{k: v for k, v in d.items() if k in known})
        if kind is not None and m.kind != kind:
            raise ValueError(f"{directory} holds a {m.kind!r} artifact, not {kind!r}.")
        return m

    def verify(self, directory: str | os.PathLike) -> None:
        """Check every listed file exists and matches its hash; the error names the file."""
        for name, digest in self.files.items():
            p = Path(directory) / name
            if not p.exists():
                raise FileNotFoundError(f"{p} is listed in {MANIFEST_NAME} but missing. Re-run the stage that writes it.")
            if sha256_file(p) != digest:
                raise ValueError(f"{p} is corrupt or truncated (sha256 differs from {MANIFEST_NAME}). Delete it and re-run.")

    def check_model(self, role: str, fingerprint: str, what: str = "artifact") -> None:
        """Refuse an artifact made from another model."""
        rec = self.models.get(role)
        if rec is None:
            raise ValueError(f"This {what} records no {role} model; it cannot be checked against the one given.")
        if rec.get("fingerprint") != fingerprint:
            raise ValueError(
                f"This {what} was made with {role} model {rec.get('path')!r} (fingerprint {rec.get('fingerprint')}), "
                f"but the given {role} model has fingerprint {fingerprint}. Rebuild it for this model."
            )
