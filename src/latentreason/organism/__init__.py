"""The built-in model organism: a tiny base model and its RL-trained twin."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DIR = Path(__file__).parent / "default"


def default_pair_dir() -> Path:
    """Directory of the shipped default pair."""
    if not (DEFAULT_DIR / "pair.json").exists():
        raise FileNotFoundError(
            f"The shipped organism pair is missing from {DEFAULT_DIR}; reinstall latentreason or run "
            f"`latentreason organism train --out {DEFAULT_DIR}`."
        )
    return DEFAULT_DIR


def load_default(device: str | None = None):
    """Load the shipped organism pair as a :class:`~latentreason.pair.ModelPair`.

    Example:
        >>> pair = load_default()
        >>> pair.task
        'arith'
    """
    from latentreason.pair import load_organism_pair

    return load_organism_pair(default_pair_dir(), device=device)
