"""The HTML report: one self-contained page (figures inlined, no network) for a run directory.

Sections: headline numbers with intervals, recovery curves, every point with its controls
(oracle routers labelled), reasoning quality, the taxonomy, and rollouts per generator with
each steered token highlighted and its vector named on hover.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from latentreason.io import read_json, write_text
from latentreason.rundir import RunDir

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} tr.oracle td{background:#fff3e0} tr.control td{color:#555}
.fig{max-width:100%;border:1px solid #eee;margin:.4em 0} .figs{display:flex;flex-wrap:wrap;gap:1em}
.figs img{width:48%} pre.roll{background:#fafafa;border:1px solid #eee;padding:.5em;white-space:pre-wrap;font-size:.85em}
mark.s{background:#ffd54f;border-radius:2px;cursor:help} .note{color:#666;font-size:.9em}
.badge{display:inline-block;padding:0 .4em;border-radius:3px;background:#ffe0b2;font-size:.8em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="fig" alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{nd}f}"
    return html.escape(str(x))


def _ci(pt: dict[str, Any], key: str = "recovery") -> str:
    lo, hi = pt.get(f"{key}_ci", [None, None])
    return f"{_fmt(pt.get(key), 2)} [{_fmt(lo, 2)}, {_fmt(hi, 2)}]"


def highlight(pieces: list[str], steered: list[tuple[int, str]]) -> str:
    """HTML of a completion whose steered tokens are marked, the vector's name on hover."""
    marks = {int(t): name for t, name in steered}
    out = []
    for t, piece in enumerate(pieces):
        text = html.escape(piece)
        out.append(f'<mark class="s" title="steered: {html.escape(marks[t])}">{text or "&#8203;"}</mark>' if t in marks else text)
    return "".join(out)


def _points_table(points: list[dict[str, Any]]) -> str:
    rows = ["<table><tr><th class=l>decoding</th><th class=l>router</th><th class=l>control</th><th>alpha</th><th>threshold</th><th>budget</th><th>acc</th><th>recovery [95% CI]</th><th>n</th></tr>"]
    for p in points:
        cls = "oracle" if p.get("is_oracle") else ("control" if p.get("control") else "")
        router = html.escape(p.get("router", "")) + (' <span class="badge">ORACLE</span>' if p.get("is_oracle") else "")
        rows.append(
            f'<tr class="{cls}"><td class=l>{_fmt(p.get("decoding"))}</td><td class=l>{router}</td><td class=l>{_fmt(p.get("control"))}</td>'
            f'<td>{_fmt(p.get("alpha"), 2)}</td><td>{_fmt(p.get("threshold"), 2)}</td><td>{_fmt(p.get("budget"))}</td><td>{_fmt(p.get("acc"))}</td><td>{_ci(p)}</td><td>{p.get("n")}</td></tr>'
        )
    return "\n".join(rows) + "</table>"


def _quality_section(rd: RunDir) -> str:
    path = rd.quality / "quality.json"
    if not path.exists():
        return '<p class="note">No reasoning-quality results in this run (run <code>latentreason quality --out RUN</code>).</p>'
    q = read_json(path)
    gens = q.get("generators", q)
    rows = ["<table><tr><th class=l>generator</th><th>n</th><th>accuracy</th><th>reasoning rate</th><th>early-answering AOC</th><th>filler acc</th><th>info gain / step (nats)</th></tr>"]
    for name, g in gens.items():
        if not isinstance(g, dict):
            continue

        def ci(d: Any, key: str) -> str:
            if not isinstance(d, dict) or d.get(key) is None:
                return "–"
            lo, hi = (d.get(f"{key}_ci") or [None, None])[:2]
            return f"{_fmt(d.get(key))} [{_fmt(lo, 2)}, {_fmt(hi, 2)}]"

        rows.append(
            f"<tr><td class=l>{html.escape(name)}</td><td>{g.get('n')}</td><td>{ci(g, 'acc')}</td><td>{ci(g, 'reasoning_rate')}</td>"
            f"<td>{ci(g.get('early_answering'), 'aoc')}</td><td>{ci(g.get('filler'), 'acc')}</td><td>{ci(g.get('info_gain'), 'per_step')}</td></tr>"
        )
    figs = "".join(_img(p) for p in sorted(rd.quality.glob("*.png")))
    return "\n".join(rows) + "</table>" + f'<div class="figs">{figs}</div>'


def _taxonomy_section(rd: RunDir, result: dict[str, Any]) -> str:
    metrics = rd.taxonomy / "metrics.json"
    if metrics.exists():
        m = read_json(metrics)
        keys = ["method", "k", "site", "silhouette", "stability_ari", "ari_planted", "nmi_planted"]
        cells = "".join(f"<tr><td class=l>{k}</td><td>{_fmt(m.get(k))}</td></tr>" for k in keys if k in m)
        clusters = rd.taxonomy / "clusters.json"
        extra = ""
        if clusters.exists():
            cl = read_json(clusters)
            items = cl.get("clusters", cl) if isinstance(cl, dict) else cl
            extra = "<ul>" + "".join(f"<li>{html.escape(str(c.get('label', c.get('cluster'))))} — {c.get('size', '')} sentences</li>" for c in items if isinstance(c, dict)) + "</ul>"
        return f"<table>{cells}</table>{extra}"
    return f'<p>Strategies: {", ".join(html.escape(s) for s in result.get("strategies", []))} (planted labels of the organism\'s task; discover them with <code>--taxonomy kmeans</code>).</p>'


def _rollouts_section(rd: RunDir, result: dict[str, Any], per_generator: int) -> str:
    pdirs = sorted((rd.recovery / "points").glob("*"))
    if not pdirs:
        return ""
    pdir = pdirs[-1]
    best = best_point(result)
    wanted = [("base_greedy", "base model"), ("post_rl_greedy", "post-RL model")]
    if best:
        wanted.append((f"greedy_probe_a{best['alpha']}_t{best.get('threshold')}", f"hybrid (probe router, alpha {best['alpha']})"))
        wanted.append((f"greedy_random_s0_a{best['alpha']}", "control: norm-matched random vectors"))
        wanted.append((f"greedy_oracle_a{best['alpha']}", "ORACLE router"))
    out = []
    for stem, title in wanted:
        f = pdir / f"{stem}.json"
        if not f.exists():
            continue
        rec = read_json(f)
        ex = rec.get("examples", [])[:per_generator]
        if not ex:
            continue
        out.append(f"<h3>{html.escape(title)}</h3>")
        for e in ex:
            pieces = e.get("pieces") or list(e["completion"])
            prob = html.escape(json.dumps(e.get("problem"))) if e.get("problem") is not None else ""
            out.append(f'<p class="note">problem {prob}</p><pre class="roll">{highlight(pieces, e.get("steered", []))}</pre>')
    return "\n".join(out)


def best_point(result: dict[str, Any], max_budget: float = 0.2, decoding: str = "greedy") -> dict[str, Any] | None:
    """The honest (non-oracle, non-control) point with the highest recovery at budget <= ``max_budget``."""
    cands = [p for p in result.get("points", []) if p.get("decoding") == decoding and not p.get("is_oracle") and p.get("control") is None and p.get("budget", 1) <= max_budget and p.get("recovery") is not None]
    return max(cands, key=lambda p: (p["recovery"], -p["budget"])) if cands else None


def build_report(run: str | os.PathLike, per_generator: int = 3) -> Path:
    """Write ``RUN/report.html`` from the artifacts in the run directory; returns its path."""
    rd = RunDir(run)
    rpath = rd.recovery / "recovery.json"
    if not rpath.exists():
        raise FileNotFoundError(f"{rpath} is missing: run `latentreason recover --out {run}` (or `latentreason demo`) first.")
    result = read_json(rpath)
    best = best_point(result)
    head = []
    for d, info in result.get("decodings", {}).items():
        head.append(
            f"<tr><td class=l>{d}</td><td>{_fmt(info.get('base_acc'))} [{_fmt((info.get('base_acc_ci') or [None])[0], 2)}, {_fmt((info.get('base_acc_ci') or [None, None])[1], 2)}]</td>"
            f"<td>{_fmt(info.get('post_rl_acc'))} [{_fmt((info.get('post_rl_acc_ci') or [None])[0], 2)}, {_fmt((info.get('post_rl_acc_ci') or [None, None])[1], 2)}]</td><td>{_fmt(info.get('chosen_alpha'), 2)}</td></tr>"
        )
    headline = ""
    if best:
        same = [p for p in result["points"] if p.get("decoding") == "greedy" and p.get("alpha") == best["alpha"] and (p.get("control") or p.get("is_oracle"))]
        headline = f"<p><b>Best honest point (greedy, budget ≤ 20%):</b> recovery {_ci(best)} at budget {_fmt(best['budget'])} (alpha {best['alpha']}, probe router, no logits read). Controls at the same alpha:</p>" + _points_table(same)
    inter = result.get("interventions") or []
    if inter:
        rows = "".join(f"<tr><td class=l>{html.escape(p['name'])}</td><td class=l>{_fmt(p['decoding'])}</td><td>{_fmt(p['acc'])}</td><td>{_ci(p)}</td><td>{p['n']}</td></tr>" for p in inter)
        headline += f"<p><b>Cheap interventions that change weights</b> (no tokens steered), on the same problems:</p><table><tr><th class=l>intervention</th><th class=l>decoding</th><th>acc</th><th>recovery [95% CI]</th><th>n</th></tr>{rows}</table>"
    figs = "".join(_img(p) for p in sorted(rd.recovery.glob("recovery_vs_*.png")))
    extra_figs = "".join(_img(p) for p in sorted(rd.figures.glob("*.png"))) if rd.figures.exists() else ""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>latentreason report — {html.escape(str(result.get('pair')))}</title><style>{CSS}</style></head><body>
<h1>latentreason report: {html.escape(str(result.get('pair')))} on {html.escape(str(result.get('task')))}</h1>
<p class="note">Recovery = (hybrid − base) / (post-RL − base), 95% paired bootstrap intervals over {result.get('n')} held-out problems. Vectors act on the base model at {html.escape(str(result.get('site')))}; the router reads the post-RL model at {html.escape(str(result.get('router_site')))}. Routers marked <span class="badge">ORACLE</span> read the post-RL model's logits.</p>
<h2>Headline</h2><table><tr><th class=l>decoding</th><th>base acc [95% CI]</th><th>post-RL acc [95% CI]</th><th>alpha chosen on dev</th></tr>{''.join(head)}</table>
{headline}
<h2>Recovery curves</h2><div class="figs">{figs}{extra_figs}</div>
<h2>All points</h2>{_points_table(result.get('points', []))}
<h2>Reasoning quality</h2>{_quality_section(rd)}
<h2>Taxonomy</h2>{_taxonomy_section(rd, result)}
<h2>Rollouts</h2><p class="note">Highlighted characters are the tokens generated where a vector was injected; hover for the vector's name.</p>{_rollouts_section(rd, result, per_generator)}
<script>
// self-check for headless tests: every figure decoded, no error on the page
window.addEventListener("error", function (e) {{ console.error("report error: " + (e.message || (e.target && e.target.src) || "resource")); }}, true);
window.addEventListener("load", function () {{
  var bad = Array.prototype.filter.call(document.images, function (i) {{ return !i.complete || i.naturalWidth === 0; }});
  if (bad.length) console.error("report: " + bad.length + " figure(s) failed to load");
  document.body.setAttribute("data-figures", String(document.images.length - bad.length));
  document.body.setAttribute("data-status", bad.length ? "errors" : "ok");
}});
</script>
</body></html>"""
    return write_text(rd.report, page)
