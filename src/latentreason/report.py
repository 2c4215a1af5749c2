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
th{background:#f4f4f4} td.l,th.l{text-align:left} tr.oracle td{background:#fff3e0} tr.control td{color:#555} tr.chosen td{background:#e8f5e9}
.fig{max-width:100%;border:1px solid #eee;margin:.4em 0} .figs{display:flex;flex-wrap:wrap;gap:1em}
.figs img{width:48%} pre.roll{background:#fafafa;border:1px solid #eee;padding:.5em;white-space:pre-wrap;font-size:.85em}
mark.s{background:#ffd54f;border-radius:2px;cursor:help} .note{color:#666;font-size:.9em}
.badge{display:inline-block;padding:0 .4em;border-radius:3px;background:#ffe0b2;font-size:.8em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="fig" alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(x: Any, nd: int = 3) -> str:
    """HTML text of any JSON value: floats rounded, everything else escaped (files may be tampered with)."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{nd}f}"
    return html.escape(str(x))


def _pair(v: Any) -> tuple[Any, Any]:
    """An interval ``[lo, hi]`` as two values, whatever the JSON holds."""
    return (v[0], v[1]) if isinstance(v, (list, tuple)) and len(v) >= 2 else (None, None)


def _ci(pt: dict[str, Any], key: str = "recovery", nd: int = 2) -> str:
    lo, hi = _pair(pt.get(f"{key}_ci"))
    return f"{_fmt(pt.get(key), nd)} [{_fmt(lo, 2)}, {_fmt(hi, 2)}]"


def _dicts(items: Any) -> list[dict[str, Any]]:
    """The dict entries of a JSON list (anything else in it is skipped)."""
    return [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []


def highlight(pieces: list[str], steered: list[tuple[int, str]]) -> str:
    """HTML of a completion whose steered tokens are marked, the vector's name on hover."""
    marks = {int(t): name for t, name in steered}
    out = []
    for t, piece in enumerate(pieces):
        text = html.escape(str(piece))
        out.append(f'<mark class="s" title="steered: {html.escape(str(marks[t]))}">{text or "&#8203;"}</mark>' if t in marks else text)
    return "".join(out)


def _points_table(points: list[dict[str, Any]]) -> str:
    rows = ["<table><tr><th class=l>decoding</th><th class=l>router</th><th class=l>control</th><th>alpha</th><th>threshold</th><th>budget</th><th>acc</th><th>recovery [95% CI]</th><th>n</th></tr>"]
    for p in _dicts(points):
        cls = "oracle" if p.get("is_oracle") else ("control" if p.get("control") else "chosen" if p.get("chosen") is True else "")
        router = _fmt(p.get("router", "")) + (' <span class="badge">ORACLE</span>' if p.get("is_oracle") else "") + (' <span class="badge">chosen on dev</span>' if p.get("chosen") is True else "")
        rows.append(
            f'<tr class="{cls}"><td class=l>{_fmt(p.get("decoding"))}</td><td class=l>{router}</td><td class=l>{_fmt(p.get("control"))}</td>'
            f'<td>{_fmt(p.get("alpha"), 2)}</td><td>{_fmt(p.get("threshold"), 2)}</td><td>{_fmt(p.get("budget"))}</td><td>{_fmt(p.get("acc"))}</td><td>{_ci(p)}</td><td>{_fmt(p.get("n"))}</td></tr>'
        )
    return "\n".join(rows) + "</table>"


def _quality_section(rd: RunDir) -> str:
    path = rd.quality / "quality.json"
    if not path.exists():
        return '<p class="note">No reasoning-quality results in this run (run <code>latentreason quality --out RUN</code>).</p>'
    q = read_json(path)
    gens = q.get("generators", q) if isinstance(q, dict) else {}
    gens = gens if isinstance(gens, dict) else {}
    rows = ["<table><tr><th class=l>generator</th><th>n</th><th>accuracy</th><th>reasoning rate</th><th>early-answering AOC</th><th>filler acc</th><th>info gain / step (nats)</th></tr>"]
    for name, g in gens.items():
        if not isinstance(g, dict):
            continue

        def ci(d: Any, key: str) -> str:
            if not isinstance(d, dict) or d.get(key) is None:
                return "–"
            lo, hi = _pair(d.get(f"{key}_ci"))
            return f"{_fmt(d.get(key))} [{_fmt(lo, 2)}, {_fmt(hi, 2)}]"

        rows.append(
            f"<tr><td class=l>{_fmt(name)}</td><td>{_fmt(g.get('n'))}</td><td>{ci(g, 'acc')}</td><td>{ci(g, 'reasoning_rate')}</td>"
            f"<td>{ci(g.get('early_answering'), 'aoc')}</td><td>{ci(g.get('filler'), 'acc')}</td><td>{ci(g.get('info_gain'), 'per_step')}</td></tr>"
        )
    figs = "".join(_img(p) for p in sorted(rd.quality.glob("*.png")))
    return "\n".join(rows) + "</table>" + f'<div class="figs">{figs}</div>'


def _taxonomy_section(rd: RunDir, result: dict[str, Any]) -> str:
    metrics = rd.taxonomy / "metrics.json"
    if metrics.exists():
        m = read_json(metrics)
        m = m if isinstance(m, dict) else {}
        keys = ["method", "k", "site", "silhouette", "stability_ari", "ari_planted", "nmi_planted"]
        cells = "".join(f"<tr><td class=l>{k}</td><td>{_fmt(m.get(k))}</td></tr>" for k in keys if k in m)
        clusters = rd.taxonomy / "clusters.json"
        extra = ""
        if clusters.exists():
            cl = read_json(clusters)
            items = cl.get("clusters", cl) if isinstance(cl, dict) else cl
            extra = "<ul>" + "".join(f"<li>{_fmt(c.get('label', c.get('cluster')))} — {_fmt(c.get('size', ''))} sentences</li>" for c in _dicts(items)) + "</ul>"
        return f"<table>{cells}</table>{extra}"
    strategies = result.get("strategies")
    return f'<p>Strategies: {", ".join(_fmt(s) for s in (strategies if isinstance(strategies, list) else []))} (planted labels of the organism\'s task; discover them with <code>--taxonomy kmeans</code>).</p>'


def chosen_points(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per decoding, the point chosen on dev (``recovery.json``'s ``chosen``): what every headline reports.

    Other test points form the curves and are never maximised over. Empty for a
    ``recovery.json`` written before points were chosen on dev (re-run ``recover`` for one).
    """
    chosen = result.get("chosen")
    return {d: p for d, p in chosen.items() if isinstance(p, dict)} if isinstance(chosen, dict) else {}


def headline_point(result: dict[str, Any]) -> dict[str, Any] | None:
    """The point of the report's headline: the dev-chosen greedy point (else the first decoding's), or None."""
    chosen = chosen_points(result)
    return chosen.get("greedy") or next(iter(chosen.values()), None)


def _rollouts_section(rd: RunDir, result: dict[str, Any], per_generator: int) -> str:
    from latentreason.recovery import chosen_point, chosen_point_file, result_points_dir

    try:
        pdir = result_points_dir(rd.root, result)
    except ValueError as e:
        return f'<p class="note">{_fmt(str(e))}</p>'
    if not pdir.is_dir():
        return f'<p class="note">No point files for this recovery.json in {_fmt(str(pdir))}.</p>'
    wanted: list[tuple[Path, str]] = [(pdir / "base_greedy.json", "base model"), (pdir / "post_rl_greedy.json", "post-RL model")]
    chosen = chosen_point(result, "greedy")
    if chosen:
        a = chosen.get("alpha")
        f = chosen_point_file(rd.root, result, "greedy")
        if f is not None:
            wanted.append((f, f"hybrid (probe router, alpha {_fmt(a)}, threshold {_fmt(chosen.get('threshold'))}: chosen on dev)"))
        if isinstance(a, (int, float)):
            wanted.append((pdir / f"greedy_random_s0_a{a}.json", "control: norm-matched random vectors"))
            wanted.append((pdir / f"greedy_oracle_a{a}.json", "ORACLE router"))
    out = []
    for f, title in wanted:
        if not f.exists():
            continue
        rec = read_json(f)
        ex = rec.get("examples", [])[:per_generator]
        if not ex:
            continue
        out.append(f"<h3>{_fmt(title)}</h3>")
        for e in ex:
            pieces = e.get("pieces") or list(e["completion"])
            prob = html.escape(json.dumps(e.get("problem"))) if e.get("problem") is not None else ""
            out.append(f'<p class="note">problem {prob}</p><pre class="roll">{highlight(pieces, e.get("steered", []))}</pre>')
    return "\n".join(out)


def _headline(result: dict[str, Any]) -> str:
    """The dev-chosen point of each decoding with its test result, and the controls at its alpha."""
    chosen = chosen_points(result)
    if not chosen:
        return '<p class="note">This recovery.json records no point chosen on dev (it predates them); re-run <code>latentreason recover --out RUN</code> for a headline. No test point is picked as a best.</p>'
    points = _dicts(result.get("points"))
    out = []
    for d, c in chosen.items():
        attrs = " ".join(f'data-{k}="{_fmt(c.get(k), 6)}"' for k in ("alpha", "threshold", "budget", "recovery", "n"))
        lo, hi = _pair(c.get("recovery_ci"))
        out.append(
            f'<p class="headline" data-decoding="{_fmt(d)}" {attrs} data-recovery-lo="{_fmt(lo, 6)}" data-recovery-hi="{_fmt(hi, 6)}"><b>Point chosen on dev ({_fmt(d)}):</b> recovery {_ci(c)} on {_fmt(c.get("n"))} test problems, '
            f'at budget {_fmt(c.get("budget"))} (share of generated tokens steered; alpha {_fmt(c.get("alpha"), 2)} chosen on the dev split at the configured router threshold {_fmt(c.get("threshold"), 2)}; probe router, no logits read). Controls at the same alpha:</p>'
        )
        out.append(_points_table([p for p in points if p.get("decoding") == d and p.get("alpha") == c.get("alpha") and (p.get("control") or p.get("is_oracle"))]))
    return "\n".join(out)


def build_report(run: str | os.PathLike, per_generator: int = 3) -> Path:
    """Write ``RUN/report.html`` from the artifacts in the run directory; returns its path."""
    rd = RunDir(run)
    rpath = rd.recovery / "recovery.json"
    if not rpath.exists():
        raise FileNotFoundError(f"{rpath} is missing: run `latentreason recover --out {run}` (or `latentreason demo`) first.")
    result = read_json(rpath)
    if not isinstance(result, dict):
        raise ValueError(f"{rpath} is not a recovery result (a JSON object); re-run `latentreason recover --out {run}`.")
    head = []
    decodings = result.get("decodings")
    for d, info in (decodings.items() if isinstance(decodings, dict) else []):
        info = info if isinstance(info, dict) else {}
        head.append(f"<tr><td class=l>{_fmt(d)}</td><td>{_ci(info, 'base_acc', 3)}</td><td>{_ci(info, 'post_rl_acc', 3)}</td><td>{_fmt(info.get('chosen_alpha'), 2)}</td></tr>")
    headline = _headline(result)
    inter = _dicts(result.get("interventions"))
    if inter:
        rows = "".join(f"<tr><td class=l>{_fmt(p.get('name'))}</td><td class=l>{_fmt(p.get('decoding'))}</td><td>{_fmt(p.get('acc'))}</td><td>{_ci(p)}</td><td>{_fmt(p.get('n'))}</td></tr>" for p in inter)
        headline += f"<p><b>Cheap interventions that change weights</b> (no tokens steered), on the same problems:</p><table><tr><th class=l>intervention</th><th class=l>decoding</th><th>acc</th><th>recovery [95% CI]</th><th>n</th></tr>{rows}</table>"
    if result.get("interventions_skipped"):
        headline += f'<p class="note">No weight-changing interventions: {_fmt(result["interventions_skipped"])}</p>'
    figs = "".join(_img(p) for p in sorted(rd.recovery.glob("recovery_vs_*.png")))
    extra_figs = "".join(_img(p) for p in sorted(rd.figures.glob("*.png"))) if rd.figures.exists() else ""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>latentreason report — {_fmt(result.get('pair'))}</title><style>{CSS}</style></head><body>
<h1>latentreason report: {_fmt(result.get('pair'))} on {_fmt(result.get('task'))}</h1>
<p class="note">Recovery = (hybrid − base) / (post-RL − base), 95% paired bootstrap intervals over {_fmt(result.get('n'))} distinct held-out problems. Vectors act on the base model at {_fmt(result.get('site'))}; the router reads the post-RL model at {_fmt(result.get('router_site'))}. Alpha is chosen on the dev split at the configured router threshold; the headline is that point, and the other test points only draw the curves. Routers marked <span class="badge">ORACLE</span> read the post-RL model's logits.</p>
<h2>Headline</h2><table><tr><th class=l>decoding</th><th>base acc [95% CI]</th><th>post-RL acc [95% CI]</th><th>alpha chosen on dev</th></tr>{''.join(head)}</table>
{headline}
<h2>Recovery curves</h2><div class="figs">{figs}{extra_figs}</div>
<h2>All points</h2>{_points_table(result.get('points'))}
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
