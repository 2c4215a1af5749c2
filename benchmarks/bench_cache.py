"""Caching throughput against a plain forward pass of the same models on the same tokens.

Both are measured side by side in one process, interleaved over repeats; the ratio is taken on
the best run of each (the run least disturbed by other jobs) and on the medians:

* forward: ``model(input_ids, attention_mask)`` over exactly the batches the cache runs, no hooks,
           tokenized and padded before the clock starts;
* cache:   ``cache_activations`` end to end (read rollouts, tokenize, forward with hooks, gather,
           write and hash shards, index and manifest).

Goal: cache throughput >= 0.9 x forward throughput. On a shared machine wall times swing with
other jobs; the CPU-time ratio (process time, both sides) is printed too and is the steadier one.

    python benchmarks/bench_cache.py                           # the shipped organism
    python benchmarks/bench_cache.py --pair random --hidden 512 --layers 8   # a bigger random Qwen2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _cache_bench_data import load_bench_pair, write_synthetic_run  # noqa: E402

from latentreason.cache import CacheConfig, _batches, _plan, _shard_ids, cache_activations  # noqa: E402
from latentreason.io import read_jsonl  # noqa: E402


def prepare_batches(pair, rows, cfg: CacheConfig) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Exactly the padded batches the cache forwards, built before timing starts."""
    plan = _plan(pair, rows, cfg)
    out = []
    for k in range(len(plan.shards)):
        ids = _shard_ids(pair, rows, plan, k)
        for role in cfg.models:
            out += [(role, x, m) for _, x, m in _batches(pair, plan, k, role, ids[role], cfg.batch_size)]
    return out


@torch.no_grad()
def plain_forward(pair, batches) -> int:
    """``model(input_ids, attention_mask)`` on every batch, no hooks; returns tokens forwarded."""
    n = 0
    for role, ids, mask in batches:
        pair.model(role)(input_ids=ids, attention_mask=mask)
        n += int(mask.sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="organism", help="'organism', a pair directory, or 'random' (a random Qwen2 pair of --hidden/--layers)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--n", type=int, default=400, help="rollouts")
    ap.add_argument("--sites", default="resid_post.1")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-tokens", type=int, default=32768)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pair = load_bench_pair(args.pair, tmp / "pair", hidden=args.hidden, layers=args.layers)
        run = write_synthetic_run(pair, tmp / "run", args.n)
        rows = read_jsonl(run / "rollouts" / "rollouts.jsonl")
        cfg = CacheConfig(tuple(args.sites.split(",")), ("base", "post_rl"), args.dtype, args.batch_size, args.shard_tokens)
        batches = prepare_batches(pair, rows, cfg)
        plain_forward(pair, batches[:2])  # warm-up
        fwd, cache, fwd_cpu, cache_cpu = [], [], [], []
        n_tokens = n_completion = 0
        for r in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            n_tokens = plain_forward(pair, batches)
            fwd.append(time.perf_counter() - t)
            fwd_cpu.append(time.process_time() - c)
            t, c = time.perf_counter(), time.process_time()
            out = cache_activations(pair, run, tmp / f"act{r}", args.sites, cfg.models, dtype=args.dtype, batch_size=args.batch_size, shard_tokens=args.shard_tokens, progress=False)
            cache.append(time.perf_counter() - t)
            cache_cpu.append(time.process_time() - c)
            n_completion = sum(json.loads((out / "manifest.json").read_text())["extra"]["n_tokens"].values())
        t_fwd, t_cache = min(fwd), min(cache)
        d_model = pair.base_model.config.hidden_size
        print(f"pair={args.pair} d_model={d_model} layers={pair.base_model.config.num_hidden_layers} device={next(pair.base_model.parameters()).device} threads={torch.get_num_threads()}")
        print(f"rollouts={args.n} models=2 sites={args.sites} batch={args.batch_size} shard_tokens={args.shard_tokens} dtype={args.dtype} repeats={args.repeats}")
        print(f"tokens forwarded per pass: {n_tokens} (completion tokens cached: {n_completion})")
        print(f"plain forward : {n_tokens / t_fwd:10.0f} tokens/s  (best {t_fwd:.2f}s; runs {', '.join(f'{x:.2f}' for x in fwd)})")
        print(f"cache         : {n_tokens / t_cache:10.0f} tokens/s  (best {t_cache:.2f}s; runs {', '.join(f'{x:.2f}' for x in cache)})")
        print(f"ratio cache/forward throughput (wall): best {t_fwd / t_cache:.3f}, median {statistics.median(fwd) / statistics.median(cache):.3f}  (goal >= 0.9)")
        print(f"ratio cache/forward throughput (CPU time, robust to other jobs on the machine): best {min(fwd_cpu) / min(cache_cpu):.3f}, median {statistics.median(fwd_cpu) / statistics.median(cache_cpu):.3f}")


if __name__ == "__main__":
    main()
