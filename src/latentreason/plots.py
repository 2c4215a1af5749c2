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
from latentreason.recovery import chosen_point  # noqa: E402

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


def curves(result: dict[str, Any], decoding: str, x: str) -> dict[str, list[list[dict[str, Any]]]]:
    """The points each plot draws, ``{label: [run, ...]}``, each run sorted by ``x`` ("alpha" or "budget").

    Against alpha, the router's curve is at the configured router threshold (the one alpha is
    chosen at); against budget, it is the threshold sweep at the alpha chosen on dev. A
    control repeated over seeds gives one run per seed. Every point is a measured test point:
    none is ever replaced by the largest recovery among several.
    """
    if x not in ("alpha", "budget"):
        raise ValueError(f"x={x!r}: curves are drawn against 'alpha' or 'budget'.")
    chosen = chosen_point(result, decoding)
    threshold = chosen.get("threshold") if chosen is not None else (result.get("config") or {}).get("threshold")
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for label, pts in _series(result["points"], decoding).items():
        if pts[0].get("control") is None and not pts[0].get("is_oracle"):
            if x == "alpha":
                pts = [p for p in pts if p.get("threshold") == threshold]  # other thresholds belong to the budget curve
            elif chosen is not None:
                pts = [p for p in pts if p["alpha"] == chosen["alpha"]]  # other alphas belong to the alpha curve
        runs: dict[Any, list[dict[str, Any]]] = {}
        for p in pts:
            runs.setdefault(p.get("seed"), []).append(p)
        if runs:
            out[label] = [sorted(r, key=lambda p: p[x]) for r in runs.values()]
    return out


def _draw(ax, result: dict[str, Any], decoding: str, x: str) -> None:
    for label, runs in curves(result, decoding, x).items():
        control = runs[0][0].get("control")
        style = CONTROL_STYLE.get(control, CONTROL_STYLE[None])
        for i, pts in enumerate(runs):
            xs = [p[x] for p in pts]
            ys = [p["recovery"] for p in pts]
            err = [[p["recovery"] - p["recovery_ci"][0] for p in pts], [p["recovery_ci"][1] - p["recovery"] for p in pts]]
            line = "-" if control is None or x == "alpha" else "none"
            ax.errorbar(xs, ys, yerr=err, label=label if i == 0 else None, linestyle=line, capsize=2, alpha=0.85, **style)
    chosen = chosen_point(result, decoding)
    if chosen is not None and chosen.get("recovery") is not None:
        ax.plot([chosen[x]], [chosen["recovery"]], marker="*", markersize=16, color="gold", markeredgecolor="k", linestyle="none", zorder=5, label=f"chosen on dev (alpha {chosen['alpha']:g}, threshold {chosen.get('threshold')})")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("recovery of the RL gain")


def plot_recovery_vs_budget(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy", extra_points: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Recovery (with 95% intervals) against the share of tokens steered; controls and other interventions on the same axes.

    The point chosen on dev is starred; what each curve holds is :func:`curves` (``x="budget"``).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _draw(ax, result, decoding, "budget")
    for ep in extra_points:
        ax.errorbar([ep.get("budget", 0)], [ep["recovery"]], yerr=[[ep["recovery"] - ep["recovery_ci"][0]], [ep["recovery_ci"][1] - ep["recovery"]]], marker="*", markersize=12, linestyle="none", capsize=2, label=ep["label"])
    ax.set_xlabel("share of generated tokens steered (budget)")
    ax.set_title(f"Recovery vs budget ({decoding}); base {result['base_acc']:.2f}, post-RL {result['post_rl_acc']:.2f}")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_recovery_vs_alpha(result: dict[str, Any], path: str | os.PathLike, decoding: str = "greedy") -> list[Path]:
    """Recovery against steering strength alpha, for the router and the controls.

    The point chosen on dev is starred; what each curve holds is :func:`curves` (``x="alpha"``).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _draw(ax, result, decoding, "alpha")
    ax.set_xlabel("alpha (steering strength)")
    ax.set_title(f"Recovery vs alpha ({decoding})")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)
