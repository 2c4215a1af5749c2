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

    def mkdir(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
