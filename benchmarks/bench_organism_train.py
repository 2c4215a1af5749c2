"""Time a full organism retrain (pretrain + RL, and the single-problem RL model) with the default config.

    python benchmarks/bench_organism_train.py [--seed 1] [--out DIR] [--eval-n 600]

Prints the wall time of each stage and the eval JSON of the result, so the same run
checks that another seed reaches the same gaps; with the shipped pair's seed (0) it also
checks that the weights are bit-identical to the shipped ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from latentreason.organism import DEFAULT_DIR
from latentreason.organism.evaluate import evaluate_pair
from latentreason.organism.train import OrganismConfig, train_organism
from latentreason.pair import load_pair


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--eval-n", type=int, default=600)
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="organism-")
    t0 = time.time()
    train_organism(out, OrganismConfig(), seed=args.seed, progress=False)
    total = time.time() - t0
    man = json.load(open(f"{out}/pair.json"))
    print(f"retrain seed={args.seed}: {total:.0f} s total; stages {man['train_seconds']}")
    pair_s = man["train_seconds"]["pretrain_s"] + man["train_seconds"]["rl_s"]
    print(f"base + post-RL pair: {pair_s:.0f} s (goal <= 300 s on 2 cores)")
    shipped = json.loads((DEFAULT_DIR / "pair.json").read_text()) if (DEFAULT_DIR / "pair.json").exists() else None
    if shipped and shipped.get("seed") == args.seed and shipped.get("config") == man.get("config"):
        same = shipped["hashes"] == man["hashes"]
        print(f"weights bit-identical to the shipped pair: {same}" + ("" if same else f" (shipped {shipped['hashes']}, retrained {man['hashes']})"))
    res = evaluate_pair(load_pair(out), n=args.eval_n)
    res.pop("details")
    print(json.dumps(res))
    print(
        f"gaps: forced - base = {100 * (res['base_forced_reasoning_acc'] - res['base_greedy_acc']):.1f} pts, "
        f"post_rl - base = {100 * (res['post_rl_greedy_acc'] - res['base_greedy_acc']):.1f} pts"
    )


if __name__ == "__main__":
    main()
