"""Plots: pure functions of result dictionaries (they never run a model). PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from latentreason.io import atomic_write  # noqa: E402

CONTROL_STYLE = {
    None: dict(color="tab:blue", marker="o"),
    "random_vectors": dict(color="tab:gray", marker="x"),
    "random_timing": dict(color="tab:orange", marker="s"),
    "bias_only": dict(color="tab:brown", marker="^"),
    "every_token": dict(color="tab:red", marker="v"),
    "swapped": dict(color="tab:purple", marker="D"),
    "first_sentence_only": dict(color="tab:olive", marker="P"),
}


def save_figure(fig, path: str | os.PathLike) -> list[Path]:
    """Save ``fig`` as ``path`` (.png) and the same name .svg, atomically; closes it."""
    p = Path(path)
    out = []
    for suffix in (".png", ".svg"):
        target = p.with_suffix(suffix)
        atomic_write(target, lambda tmp, s=suffix: fig.savefig(tmp, format=s[1:], dpi=130, bbox_inches="tight"))
        out.append(target)
    plt.close(fig)
    return out


def _label(pt: dict[str, Any]) -> str:
    name = pt.get("control") or pt.get("router", "router")
    if pt.get("is_oracle"):
        name += " (ORACLE)"
    return name


def _series(points: Sequence[dict[str, Any]], decoding: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for pt in points:
        if pt.get("decoding", "greedy") == decoding:
            groups.setdefault(_label(pt), []).append(pt)
    return groups


def plot_recovery_vs_budget(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy", extra_points: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Recovery (with 95% intervals) against the share of tokens steered; controls and other interventions on the same axes."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in _series(result["points"], decoding).items():
        pts = sorted(pts, key=lambda p: p["budget"])
        style = CONTROL_STYLE.get(pts[0].get("control"), CONTROL_STYLE[None])
        xs = [p["budget"] for p in pts]
        ys = [p["recovery"] for p in pts]
        err = [[p["recovery"] - p["recovery_ci"][0] for p in pts], [p["recovery_ci"][1] - p["recovery"] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, label=label, linestyle="-" if pts[0].get("control") is None else "none", capsize=2, alpha=0.85, **style)
    for ep in extra_points:
        ax.errorbar([ep.get("budget", 0)], [ep["recovery"]], yerr=[[ep["recovery"] - ep["recovery_ci"][0]], [ep["recovery_ci"][1] - ep["recovery"]]], marker="*", markersize=12, linestyle="none", capsize=2, label=ep["label"])
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("share of generated tokens steered (budget)")
    ax.set_ylabel("recovery of the RL gain")
    ax.set_title(f"Recovery vs budget ({decoding}); base {result['base_acc']:.2f}, post-RL {result['post_rl_acc']:.2f}")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_recovery_vs_alpha(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy") -> list[Path]:
    """Recovery against steering strength alpha, for the router and the controls."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in _series(result["points"], decoding).items():
        by_alpha: dict[float, dict[str, Any]] = {}
        for p in pts:  # at each alpha keep the point with the router's default threshold (largest recovery if several)
            if p["alpha"] not in by_alpha or p["recovery"] > by_alpha[p["alpha"]]["recovery"]:
                by_alpha[p["alpha"]] = p
        xs = sorted(by_alpha)
        style = CONTROL_STYLE.get(pts[0].get("control"), CONTROL_STYLE[None])
        ys = [by_alpha[a]["recovery"] for a in xs]
        err = [[by_alpha[a]["recovery"] - by_alpha[a]["recovery_ci"][0] for a in xs], [by_alpha[a]["recovery_ci"][1] - by_alpha[a]["recovery"] for a in xs]]
        ax.errorbar(xs, ys, yerr=err, label=label, capsize=2, alpha=0.85, **style)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("alpha (steering strength)")
    ax.set_ylabel("recovery of the RL gain")
    ax.set_title(f"Recovery vs alpha ({decoding})")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
