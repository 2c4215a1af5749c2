"""Wall time of `latentreason demo` from scratch (fresh run directory), on the shipped organism.

    python benchmarks/bench_demo.py [--threads N]

Goal: <= 60 s on 2 cores. Prints the total and the report's path.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="demo-")
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "latentreason", "demo", "--fresh", "--out", out], capture_output=True, text=True)
    took = time.perf_counter() - t0
    print(run.stdout.strip())
    if run.returncode:
        print(run.stderr[-3000:])
        raise SystemExit(run.returncode)
    print(f"latentreason demo: {took:.1f} s wall (goal <= 60 s on 2 cores)")


if __name__ == "__main__":
    main()
