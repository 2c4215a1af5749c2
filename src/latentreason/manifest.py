"""One small JSON manifest per artifact: what produced it, from what, and the hashes of its files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentreason import __version__
from latentreason.io import json_sha256, read_json, sha256_file, write_json

MANIFEST_NAME = "manifest.json"
SEAL = "manifest_sha256"  # sha256 of the manifest's other keys (latentreason.io.json_sha256)
RUNNING, COMPLETE = "running", "complete"


class UnfinishedArtifactError(FileNotFoundError):
    """The directory's manifest says its stage started but never completed."""


@dataclass(frozen=True)
class Manifest:
    """Provenance of one artifact directory.

    ``models`` maps a role (``base``, ``post_rl``) to ``{"path": ..., "fingerprint": ...}``;
    ``files`` maps file names relative to the directory to their sha256. ``config`` and
    ``inputs`` (digests of the artifacts read, fingerprints) determine the artifact; ``status``
    is ``"running"`` from the moment its stage starts until it completes (see ``latentreason.stage``);
    ``owns`` lists the glob patterns of the files its stage writes (all that ``--force`` may remove).
    """

    kind: str  # e.g. "rollouts", "activations", "taxonomy", "vectors", "router"
    config: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    status: str = COMPLETE
    inputs: dict[str, Any] = field(default_factory=dict)
    owns: list[str] = field(default_factory=list)

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.json``, sealed with the sha256 of its own content (checked by :meth:`read`)."""
        d = dataclasses.asdict(self)
        return write_json(Path(directory) / MANIFEST_NAME, {**d, SEAL: json_sha256(d)})

    @classmethod
    def read(cls, directory: str | os.PathLike, kind: str | None = None, *, allow_running: bool = False) -> Manifest:
        """The manifest of ``directory``; refuses another ``kind`` and (unless ``allow_running``) an unfinished artifact."""
        path = Path(directory) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{directory} has no {MANIFEST_NAME}: it is not a finished latentreason artifact. Re-run the stage that writes it.")
        d = read_json(path)
        if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
            raise ValueError(f"{path} is not a latentreason manifest (no 'kind'). Re-run the stage that writes it into a fresh directory.")
        seal = d.pop(SEAL, None)
        if seal is None:
            raise ValueError(f"{path} carries no {SEAL!r} hash (written by an older latentreason, or by hand), so edits to it cannot be detected. Re-run the stage that writes it.")
        if json_sha256(d) != seal:
            raise ValueError(f"{path} was edited after it was written (its content no longer matches its {SEAL!r}). Restore it, or re-run the stage that writes it.")
        known = {f.name for f in dataclasses.fields(cls)}
        m = cls(**{k: v for k, v in d.items() if k in known})
        if kind is not None and m.kind != kind:
            raise ValueError(f"{directory} holds a {m.kind!r} artifact, not {kind!r}.")
        if m.status != COMPLETE and not allow_running:
            raise UnfinishedArtifactError(
                f"{directory} holds an unfinished {m.kind} artifact (status {m.status!r}: its stage was interrupted or is still running). "
                "Re-run the command that writes it to finish it, or rebuild it with --force."
            )
        return m

    def digest(self) -> str:
        """sha256 of what the artifact is (kind, config, inputs, models, file hashes): stable across rebuilds of the same thing."""
        core = {"kind": self.kind, "config": self.config, "inputs": self.inputs, "models": self.models, "files": self.files}
        return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()

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


def check_finished(directory: str | os.PathLike) -> None:
    """Refuse an artifact directory whose manifest says its stage has not completed (no manifest: nothing to check)."""
    if (Path(directory) / MANIFEST_NAME).is_file():
        Manifest.read(directory, allow_running=False)
