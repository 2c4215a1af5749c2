"""Throughput of steered vs unsteered generation, measured side by side in one run.

    python benchmarks/bench_steering.py [--pair organism] [--batch 32] [--new-tokens 256] [--repeats 5] [--device cpu] [--hf]

Models: the organism's base model and a random-weight 4-layer Qwen2. Each run decodes exactly
``--new-tokens`` tokens per row (EOS ignored) with ``generation.decode`` (``--hf``: also Hugging Face
``generate``), unsteered and steered under several schedules, interleaved; prints tokens/s (best
of ``--repeats``) and steered/unsteered ratios by wall and by process CPU time (goal >= 0.97), and the time the hook itself
takes per forward, timed alone (a load-independent bound on the ratio).
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from latentreason.fingerprint import model_fingerprint
from latentreason.generation import decode
from latentreason.pair import load_pair
from latentreason.steering import Schedule, steer
from latentreason.tasks.arith import ArithConfig, ArithTask
from latentreason.vectors import SteeringVector


def random_qwen2(device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)
    return Qwen2ForCausalLM(cfg).eval().to(device)


def every_other_step(step: int, positions: torch.Tensor, hidden: torch.Tensor):
    """A cheap router stand-in: steer every row at even steps' newest token."""
    return True if step % 2 == 0 and positions.shape[1] == 1 else None


SCHEDULES = {"all": "all", "first": "first", "callback": Schedule.from_callback(every_other_step)}


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``; CPU time is robust to other jobs on a shared machine."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def bench(name: str, model, ids: torch.Tensor, mask: torch.Tensor, args) -> None:
    device = args.device
    ids, mask = ids.to(device), mask.to(device)
    site = f"resid_post.{model.config.num_hidden_layers // 2}"
    vec = SteeringVector("bench", torch.randn(model.config.hidden_size), site, "random", model_fingerprint(model))
    n = args.new_tokens

    def gen():
        if args.runner == "hf":
            out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
            assert out.shape[1] == ids.shape[1] + n
        else:
            out = decode(model, ids, mask, max_new_tokens=n, eos_token_id=-1, pad_token_id=0)
            assert out.tokens.shape[1] == n

    def steered(at):
        def run():
            with steer(model, [(vec, 1.0)], at=at, attention_mask=mask, check=False):
                gen()

        return run

    variants = {"unsteered": gen, **{f"steered[{k}]": steered(v) for k, v in SCHEDULES.items()}}
    gen()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(args.repeats):  # interleaved in a shuffled order, so drifts in machine load hit every variant alike
        rng.shuffle(order)
        for k in order:
            wall, proc = timed(variants[k], device)
            times[k].append(wall)
            cpu[k].append(proc)
    tokens = ids.shape[0] * n
    base, base_cpu = min(times["unsteered"]), min(cpu["unsteered"])
    print(f"{name} [{args.runner}, {device}, batch {ids.shape[0]}, {n} new tokens, site {site}, best of {args.repeats}]")
    for k, ts in times.items():
        best = min(ts)
        paired = sorted(u / t for u, t in zip(times["unsteered"], ts))
        print(f"  {k:20s} {tokens / best:8.0f} tok/s  ratio {base / best:.3f} (median paired {paired[len(paired) // 2]:.3f})  CPU-time ratio {base_cpu / min(cpu[k]):.3f}")
    per_step = base / n
    for k, at in SCHEDULES.items():
        cost = hook_cost(model, vec, at, ids, mask, n)
        print(f"  hook cost[{k}]: {1e6 * cost:6.1f} us per forward = {100 * cost / per_step:.2f}% of a {1e3 * per_step:.2f} ms step -> ratio >= {per_step / (per_step + cost):.3f}")


def hook_cost(model, vec: SteeringVector, at, ids: torch.Tensor, mask: torch.Tensor, n: int) -> float:
    """Seconds per forward spent in the steering hook itself, timed alone (robust to machine load)."""
    from latentreason.steering import Steering

    s = Steering(model, [(vec, 1.0)], at=at, attention_mask=mask, check=False)
    (hook,) = s.hooks.values()
    d = model.config.hidden_size
    dtype = next(model.parameters()).dtype
    prompt = torch.zeros(ids.shape[0], ids.shape[1], d, device=ids.device, dtype=dtype)
    x = torch.zeros(ids.shape[0], 1, d, device=ids.device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        s.reset(mask)
        hook(prompt)
        t = time.perf_counter()
        for _ in range(n - 1):
            hook(x)
        if ids.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / (n - 1))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="organism")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--hf", action="store_true", help="Also time Hugging Face generate.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair = load_pair(args.pair, device=args.device)
    tok = pair.base_tokenizer
    task = ArithTask(ArithConfig(**pair.task_config)) if pair.task_config else ArithTask()
    enc = tok([task.prompt(p) for p in task.sample("test", args.batch, seed=0)], return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    rnd_ids = torch.randint(3, 2048, (args.batch, 16), generator=g)
    rnd_mask = torch.ones_like(rnd_ids)
    rnd_mask[::2, :4] = 0  # half the rows left-padded
    rnd_ids[rnd_mask == 0] = 0
    runners = ["decode", "hf"] if args.hf else ["decode"]
    with torch.no_grad():
        for runner in runners:
            args.runner = runner
            bench("organism base", pair.base_model, enc.input_ids, enc.attention_mask, args)
            bench("random 4-layer qwen2", random_qwen2(args.device), rnd_ids, rnd_mask, args)


if __name__ == "__main__":
    main()
