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


def _chosen(result: dict[str, Any], decoding: str) -> dict[str, Any] | None:
    """The point chosen on dev for ``decoding`` (``recovery.json``'s ``chosen``), or None for results without one."""
    return (result.get("chosen") or {}).get(decoding)


def _mark_chosen(ax, x: float, pt: dict[str, Any]) -> None:
    ax.plot([x], [pt["recovery"]], marker="*", markersize=16, color="gold", markeredgecolor="k", linestyle="none", zorder=5, label=f"chosen on dev (alpha {pt['alpha']:g}, threshold {pt.get('threshold')})")


def _errorbar(ax, pts: Sequence[dict[str, Any]], x: str, label: str | None, **kw) -> None:
    xs = [p[x] for p in pts]
    ys = [p["recovery"] for p in pts]
    err = [[p["recovery"] - p["recovery_ci"][0] for p in pts], [p["recovery_ci"][1] - p["recovery"] for p in pts]]
    ax.errorbar(xs, ys, yerr=err, label=label, capsize=2, alpha=0.85, **kw)


def _by_seed(pts: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Points split into one run per seed (controls repeat over seeds); never reduced to one value per x."""
    runs: dict[Any, list[dict[str, Any]]] = {}
    for p in pts:
        runs.setdefault(p.get("seed"), []).append(p)
    return list(runs.values())


def plot_recovery_vs_budget(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy", extra_points: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Recovery (with 95% intervals) against the share of tokens steered; controls and other interventions on the same axes.

    The router's curve is the threshold sweep at the alpha chosen on dev; the chosen point is
    starred. Every test point is drawn as measured: none is picked as a best.
    """
    chosen = _chosen(result, decoding)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in _series(result["points"], decoding).items():
        control = pts[0].get("control")
        if chosen is not None and control is None and not pts[0].get("is_oracle"):
            pts = [p for p in pts if p["alpha"] == chosen["alpha"]]  # other alphas belong to the alpha curve
        style = CONTROL_STYLE.get(control, CONTROL_STYLE[None])
        for i, run in enumerate(_by_seed(pts)):
            _errorbar(ax, sorted(run, key=lambda p: p["budget"]), "budget", label if i == 0 else None, linestyle="-" if control is None else "none", **style)
    for ep in extra_points:
        ax.errorbar([ep.get("budget", 0)], [ep["recovery"]], yerr=[[ep["recovery"] - ep["recovery_ci"][0]], [ep["recovery_ci"][1] - ep["recovery"]]], marker="*", markersize=12, linestyle="none", capsize=2, label=ep["label"])
    if chosen is not None and chosen.get("recovery") is not None:
        _mark_chosen(ax, chosen["budget"], chosen)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("share of generated tokens steered (budget)")
    ax.set_ylabel("recovery of the RL gain")
    ax.set_title(f"Recovery vs budget ({decoding}); base {result['base_acc']:.2f}, post-RL {result['post_rl_acc']:.2f}")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_recovery_vs_alpha(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy") -> list[Path]:
    """Recovery against steering strength alpha, for the router and the controls.

    The router's curve is at the configured router threshold (the one alpha is chosen at);
    points at other thresholds belong to the budget curve. A control repeated over seeds is
    drawn once per seed, never reduced to its largest recovery.
    """
    chosen = _chosen(result, decoding)
    threshold = chosen.get("threshold") if chosen is not None else (result.get("config") or {}).get("threshold")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in _series(result["points"], decoding).items():
        control = pts[0].get("control")
        if control is None and not pts[0].get("is_oracle"):
            pts = [p for p in pts if p.get("threshold") == threshold]
        style = CONTROL_STYLE.get(control, CONTROL_STYLE[None])
        for i, run in enumerate(_by_seed(pts)):
            _errorbar(ax, sorted(run, key=lambda p: p["alpha"]), "alpha", label if i == 0 else None, **style)
    if chosen is not None and chosen.get("recovery") is not None:
        _mark_chosen(ax, chosen["alpha"], chosen)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("alpha (steering strength)")
    ax.set_ylabel("recovery of the RL gain")
    ax.set_title(f"Recovery vs alpha ({decoding}), router threshold {threshold}")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
