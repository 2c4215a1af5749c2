"""Statistics for recovery figures: paired bootstrap intervals over problems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recovery(base: float, post_rl: float, hybrid: float) -> float:
    """(hybrid − base) / (post-RL − base); NaN when the pair has no gap."""
    gap = post_rl - base
    return float("nan") if abs(gap) < 1e-12 else (hybrid - base) / gap


def bootstrap_recovery(base: Sequence[bool], post_rl: Sequence[bool], hybrid: Sequence[bool], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Recovery and its percentile interval, resampling problems jointly for all three generators.

    All three arrays hold per-problem correctness on the same problems, in the same order.
    """
    b, r, h = (np.asarray(x, dtype=float) for x in (base, post_rl, hybrid))
    if not (len(b) == len(r) == len(h)) or len(b) == 0:
        raise ValueError(f"Per-problem results must be non-empty and equally long; got {len(b)}, {len(r)}, {len(h)}.")
    point = recovery(b.mean(), r.mean(), h.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    gaps = r[idx].mean(1) - b[idx].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = (h[idx].mean(1) - b[idx].mean(1)) / gaps
    boots = boots[np.isfinite(boots) & (np.abs(gaps) > 1e-12)]
    if len(boots) == 0:
        return point, (float("nan"), float("nan"))
    a = (1 - level) / 2
    return point, (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean and percentile interval."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))
