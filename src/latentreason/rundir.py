"""The run directory: one folder holding every stage's artifacts, with fixed children."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Paths of a run's artifacts; nobody joins these strings by hand.

    Example:
        >>> RunDir("runs/demo").vectors.as_posix()
        'runs/demo/vectors'
    """

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def rollouts(self) -> Path:  # rollouts.jsonl + manifest.json
        return self.root / "rollouts"

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def taxonomy(self) -> Path:
        return self.root / "taxonomy"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors"

    @property
    def router(self) -> Path:
        return self.root / "router"

    @property
    def recovery(self) -> Path:
        return self.root / "recovery"

    @property
    def quality(self) -> Path:
        return self.root / "quality"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def manifest(self) -> Path:  # the run's own manifest (kind "run"): marks the folder as a run and lists report.html
        return self.root / "manifest.json"

    @property
    def sft(self) -> Path:  # the single-problem SFT model placed on the recovery curves
        return self.root / "single_problem_sft"

    @property
    def recovery_file(self) -> Path:
        return self.recovery / "recovery.json"

    def points(self, key: str) -> Path:
        """The directory of one recovery config's points (``key`` = ``RecoverConfig.key()``)."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"Points key {key!r} is not a plain name; use RecoverConfig.key().")
        return self.recovery / "points" / key

    def point(self, key: str, name: str) -> Path:
        """One point's file: ``recovery/points/<key>/<name>.json``."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"Point name {name!r} is not a plain name.")
        return self.points(key) / f"{name}.json"

    def stages(self) -> dict[Path, str]:
        """Every stage directory the run may hold, with the artifact kind expected there."""
        out = {self.rollouts: "rollouts", self.activations: "activations", self.taxonomy: "taxonomy", self.vectors: "vectors",
               self.router: "router", self.quality: "quality", self.sft: "sft"}
        points = self.recovery / "points"
        if points.is_dir():
            out.update({p: "points" for p in sorted(points.iterdir()) if p.is_dir() and not p.name.startswith(".")})
        out[self.recovery] = "recovery"  # after its points
        return out

    def children(self) -> set[str]:
        """Names a run directory holds (anything else in it is not the run's)."""
        return {"rollouts", "activations", "taxonomy", "vectors", "router", "recovery", "quality", "figures", "single_problem_sft", "report.html", "manifest.json"}

    def mkdir(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
