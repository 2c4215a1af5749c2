"""Peak memory of caching N against 10 N rollouts, each in a fresh subprocess.

Shards are flushed when full, so peak memory should barely grow with the number of rollouts.
Goal: peak RSS at 10 N <= 1.2 x peak RSS at N. Also printed: the growth of the caching step
alone (peak minus the RSS just before caching), the stricter view.

    python benchmarks/bench_cache_memory.py --n 200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    import torch

    from _cache_bench_data import load_bench_pair

    from latentreason.cache import cache_activations

    torch.set_num_threads(1)
    pair = load_bench_pair(args.pair, Path(args.scratch), hidden=args.hidden, layers=args.layers)
    pair.fingerprint("base"), pair.fingerprint("post_rl")
    before = rss_mib()
    cache_activations(pair, args.run, args.out, args.sites, dtype=args.dtype, batch_size=args.batch_size, shard_tokens=args.shard_tokens, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    man = json.loads((Path(args.out) / "manifest.json").read_text())
    n_shards = sum(f.startswith("shard_") for f in man["files"])
    print(json.dumps({"before_mib": before, "peak_mib": peak, "shards": n_shards, "tokens": man["extra"]["n_tokens"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="organism")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sites", default="resid_pre.0,resid_post.0,resid_post.1,resid_post.2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-tokens", type=int, default=32768)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    from _cache_bench_data import load_bench_pair, write_synthetic_run

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "pair").mkdir()
        pair = load_bench_pair(args.pair, tmp / "pair", hidden=args.hidden, layers=args.layers)
        spec = str(tmp / "pair") if args.pair == "random" else args.pair
        res = {}
        for n in (args.n, 10 * args.n):
            run = write_synthetic_run(pair, tmp / f"run{n}", n)
            cmd = [sys.executable, __file__, "--child", "--pair", spec, "--scratch", str(tmp / f"s{n}"), "--run", str(run), "--out", str(tmp / f"act{n}"), "--sites", args.sites, "--batch-size", str(args.batch_size), "--shard-tokens", str(args.shard_tokens), "--dtype", args.dtype]
            if args.pair == "random":
                cmd[cmd.index("--pair") + 1] = str(tmp / "pair")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            res[n] = json.loads(out.strip().splitlines()[-1])
        a, b = res[args.n], res[10 * args.n]
        print(f"pair={args.pair} sites={args.sites} shard_tokens={args.shard_tokens} dtype={args.dtype} batch={args.batch_size}")
        for n, r in res.items():
            print(f"N={n:6d}: peak RSS {r['peak_mib']:8.1f} MiB  (before caching {r['before_mib']:.1f} MiB; caching adds {r['peak_mib'] - r['before_mib']:.1f} MiB)  shards={r['shards']} tokens={r['tokens']}")
        growth = b["peak_mib"] / a["peak_mib"] - 1
        print(f"peak RSS growth N -> 10N: {100 * growth:+.1f}%  (goal <= +20%)")
        da, db = a["peak_mib"] - a["before_mib"], b["peak_mib"] - b["before_mib"]
        print(f"caching-step growth N -> 10N: {da:.1f} -> {db:.1f} MiB")


if __name__ == "__main__":
    main()
