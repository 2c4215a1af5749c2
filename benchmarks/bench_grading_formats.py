"""The grader on every real item in every answer format: right answers accepted, wrong ones rejected.

Renders each GSM8K and MATH-500 gold answer (``../shared/data``) into each format of
``tests/_answer_formats.py`` after the item's own reasoning, grades it, and grades two wrong
answers in the same format (gold + 1 where numeric, another item's answer). Prints one row per
format: items it applies to, share graded right, wrong answers tried, share rejected, how
many were accepted, seconds.

    python benchmarks/bench_grading_formats.py            # every item (minutes, single core)
    python benchmarks/bench_grading_formats.py --every 7  # every 7th item
    python benchmarks/bench_grading_formats.py --json out.json --show 5

The default test tier runs the same check on a sample (``tests/test_grading.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _answer_formats import FORMATS, SHARED_DATA, check_format, load_items  # noqa: E402

from latentreason.grading import grade  # noqa: E402


def run(every: int = 1, formats: list[str] | None = None, data: Path = SHARED_DATA) -> dict[str, dict]:
    """Per-format results ``{name: {n, right, n_wrong, rejected, seconds, graded_wrong, accepted}}``."""
    items = load_items(data)
    picked = [k for k in range(len(items)) if k % every == 0]
    out: dict[str, dict] = {}
    for name in formats or list(FORMATS):
        t = time.perf_counter()
        res = check_format(items, name, picked, grade)
        out[name] = {**asdict(res), "seconds": time.perf_counter() - t}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="grade every N-th item (default 1: all 1,819)")
    ap.add_argument("--formats", default=None, help="comma-separated format names (default: all)")
    ap.add_argument("--show", type=int, default=0, help="print up to N failures per format")
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if not (args.data / "gsm8k" / "test.jsonl").exists() or not (args.data / "math500" / "test.jsonl").exists():
        sys.exit(f"no shared data at {args.data}: expected gsm8k/test.jsonl and math500/test.jsonl (pass --data)")
    res = run(args.every, args.formats.split(",") if args.formats else None, args.data)
    print(f"{'format':28s} {'items':>6s} {'right':>8s} {'wrong':>6s} {'rejected':>9s} {'accepted':>8s} {'s':>6s}")
    for name, r in res.items():
        rr = r["right"] / r["n"] if r["n"] else float("nan")
        wr = r["rejected"] / r["n_wrong"] if r["n_wrong"] else float("nan")
        print(f"{name:28s} {r['n']:6d} {rr:8.2%} {r['n_wrong']:6d} {wr:9.2%} {r['n_wrong'] - r['rejected']:8d} {r['seconds']:6.1f}")
        for f in (r["graded_wrong"] + r["accepted"])[: args.show]:
            print("    ", json.dumps(f))
    total = sum(r["seconds"] for r in res.values())
    print(f"total {total:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
