"""Hybrid engine throughput, measured side by side in one run.

    python benchmarks/bench_hybrid.py [--pair organism] [--batch 32] [--new-tokens 256]

Prints tokens/s of
  (a) the naive loop of the reference code: both models re-run on the whole sequence for
      every token, batch 1, no KV cache (timed on a few rows, then per token);
  (b) the two-model limit: one KV-cached forward of each model per token, no router;
  (c) the hybrid engine (router + steering hook) at the same batch,
and the ratios (c)/(a) (goal >= 30x) and (c)/(b) (goal >= 0.85). Every row is forced to
the full length (EOS ignored) so all three do the same number of tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from latentreason.generation import KVStepper, left_pad
from latentreason.hybrid import HybridEngine
from latentreason.pair import load_pair
from latentreason.routers import ProbeRouter
from latentreason.tasks.arith import ArithTask
from latentreason.vectors import SteeringVector


def two_model_limit(pair, ids, new_tokens: int) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        b, p = KVStepper(pair.base_model, ids), KVStepper(pair.post_rl_model, ids)
        nxt = None
        for step in range(new_tokens):
            p.forward(*p.feed(step, nxt))
            nxt = b.forward(*b.feed(step, nxt)).argmax(-1)
    return ids.shape[0] * new_tokens / (time.perf_counter() - t0)


def naive(pair, ids, new_tokens: int, rows: int) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for r in range(rows):
            seq = ids[r : r + 1]
            for _ in range(new_tokens):
                pair.post_rl_model(input_ids=seq, output_hidden_states=True)  # router input
                logits = pair.base_model(input_ids=seq).logits[:, -1]
                seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return rows * new_tokens / (time.perf_counter() - t0)


class NoEOS:
    """Wrap a tokenizer so no token is EOS (every row runs the full length)."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return -1 if name == "eos_token_id" else getattr(self._tok, name)

    def __call__(self, *a, **k):
        return self._tok(*a, **k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="organism")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--naive-rows", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = load_pair(args.pair)
    for m in (pair.base_model, pair.post_rl_model):
        m.config.max_position_embeddings = max(m.config.max_position_embeddings, 64 + args.new_tokens)
    task = ArithTask()
    prompts = [task.prompt(p) for p in task.sample("test", args.batch, seed=0)]
    tok = pair.base_tokenizer
    ids, _ = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    d = pair.base_model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    vectors = [SteeringVector(f"v{i}", torch.randn(d, generator=g), "resid_post.1", "random", pair.fingerprint("base")) for i in range(3)]
    X = torch.randn(300, d, generator=g)
    router = ProbeRouter(["v0", "v1", "v2"], "resid_post.1", threshold=0.5).fit(X, torch.arange(300) % 4 - 1, fingerprint=pair.fingerprint("post_rl"))
    engine = HybridEngine(pair, vectors, router, alpha=1.0)
    pair.base_tokenizer = NoEOS(tok)

    two_model_limit(pair, ids[:4], 8)  # warm-up
    limit = two_model_limit(pair, ids, args.new_tokens)
    t0 = time.perf_counter()
    res = engine.generate(prompts, max_new_tokens=args.new_tokens)
    hybrid = res.generated_tokens / (time.perf_counter() - t0)
    slow = naive(pair, ids, args.new_tokens, args.naive_rows)
    print(f"pair={args.pair} batch={args.batch} new_tokens={args.new_tokens} threads={torch.get_num_threads()} budget={res.budget:.3f}")
    print(f"naive (re-run both models per token, batch 1, no cache): {slow:10.1f} tok/s")
    print(f"two-model limit (one cached forward of each per token):  {limit:10.1f} tok/s")
    print(f"hybrid engine (router + steering):                        {hybrid:10.1f} tok/s")
    print(f"hybrid / naive = {hybrid / slow:.1f}x (goal >= 30x);  hybrid / two-model limit = {hybrid / limit:.3f} (goal >= 0.85)")


if __name__ == "__main__":
    main()
