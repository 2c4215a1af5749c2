"""Organism designs tried and not shipped (docs/organism.md, "Designs tried and not shipped").

    # a multiplication may also be done in place (S: 7*2=4), unreliably
    python benchmarks/organism_variants.py --out runs/v3  --inplace 0.6  --worked 0.4 --pretrain-batch 128 --switch 0.3 --eval-n 600
    python benchmarks/organism_variants.py --out runs/v3b --inplace 0.5  --worked 0.4 --pretrain-batch 128 --pretrain-steps 1400 --rl-steps 60
    python benchmarks/organism_variants.py --out runs/v3c --inplace 0.65 --worked 0.4 --pretrain-batch 128 --pretrain-steps 1400 --rl-steps 60
    # the v2 organism as first shipped: 40% of solutions start working (a 3:2 coin flip)
    python benchmarks/organism_variants.py --out runs/v2a --worked 0.4 --pretrain-batch 128 --eval-n 600 --recover
    # harder coin flips: fewer solutions start working, fewer go on at a switch
    python benchmarks/organism_variants.py --out runs/v2b --worked 0.3 --switch 0.3 --pretrain-batch 128 --recover
    python benchmarks/organism_variants.py --out runs/v2c --worked 0.3 --switch 0.3 --pretrain-batch 128 --rl-steps 80 --recover

Variants tried before the shipped corpus moved to 25% worked solutions carry
``--worked 0.4 --pretrain-batch 128``, the settings of their time (pretraining then summed the
loss over 4 length buckets instead of 8: the same loss, another rounding, so the weights are
not bit-identical to those runs).

Trains a pair (seed 0, no single-problem model) with the shipped defaults changed as asked,
then prints the eval on ``--eval-n`` test problems, with ``multiply_in_place`` (share of worked
multiplications done in place) for each generator; ``--recover`` also runs
``latentreason recover --decoding greedy`` on it. ``--inplace`` swaps the corpus's worked
solutions for ones whose multiplications are done in place with that chance, writing a
product of 10 or more with its tens digit with chance ``--inplace-error``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import time

from latentreason.organism import corpus
from latentreason.organism.corpus import CorpusConfig
from latentreason.tasks.arith import (
    MARKER_OF,
    STRATEGY_OF_OP,
    Problem,
    apply_op,
    step_body,
)


def inplace_worked_solution(inplace: float, error: float):
    """The shipped ``worked_solution``, except that multiplications may be done in place, unreliably."""

    def worked_solution(problem: Problem, rng: random.Random, cfg: CorpusConfig, width: int) -> tuple[list[str], list[str]]:
        sents, labels = [], []
        acc, m = problem.digits[0], problem.modulus
        for j, op in enumerate(problem.ops):
            d = problem.digits[j + 1]
            if j and STRATEGY_OF_OP[op] != STRATEGY_OF_OP[problem.ops[j - 1]] and rng.random() >= cfg.switch_continue:
                for op2, d2 in zip(problem.ops[j:], problem.digits[j + 1 :]):
                    acc = apply_op(acc, op2, d2, m)
                break
            if op == "*" and rng.random() < inplace:
                r = (acc * d) // 10 % m if acc * d >= 10 and rng.random() < error else acc * d % m
                sents.append(f"S: {(f'{acc}*{d}={r}' + problem.rest(j)).rjust(width)}")
                labels.append("step")
            else:
                r = apply_op(acc, op, d, m)
                sents.append(f"{MARKER_OF[STRATEGY_OF_OP[op]]}: {step_body(problem, j, acc, width)}")
                labels.append(STRATEGY_OF_OP[op])
            acc = r
        return sents + [f"A:{acc}"], labels + ["answer"]

    return worked_solution


def in_place_share(problems, completions) -> float | None:
    from latentreason.tasks.arith import strategy_labels

    inplace = worked = 0
    for p, c in zip(problems, completions):
        steps = [l for l in strategy_labels(c) if l not in (None, "answer")]
        for op, label in zip(p.ops, steps):
            if op == "*":
                worked += 1
                inplace += label == "step"
    return round(inplace / worked, 3) if worked else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--inplace", type=float, default=None, help="chance a worked multiplication is done in place")
    ap.add_argument("--inplace-error", type=float, default=0.5)
    ap.add_argument("--worked", type=float, default=None, help="corpus worked_fraction")
    ap.add_argument("--switch", type=float, default=None, help="corpus switch_continue")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--pretrain-batch", type=int, default=None, help="pretraining batch size")
    ap.add_argument("--rl-steps", type=int, default=None)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--recover", action="store_true")
    args = ap.parse_args()

    if args.inplace is not None:
        corpus.worked_solution = inplace_worked_solution(args.inplace, args.inplace_error)
    from latentreason.organism.evaluate import (
        run_forced,
        run_forced_first,
        run_generator,
        summarise,
    )
    from latentreason.organism.train import OrganismConfig, train_organism
    from latentreason.pair import load_pair
    from latentreason.tasks.arith import ArithTask

    cfg = OrganismConfig()
    cc = {k: v for k, v in (("worked_fraction", args.worked), ("switch_continue", args.switch)) if v is not None}
    cfg = dataclasses.replace(cfg, corpus=dataclasses.replace(cfg.corpus, **cc))
    if args.pretrain_steps:
        cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, steps=args.pretrain_steps))
    if args.pretrain_batch:
        cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, batch_size=args.pretrain_batch))
    if args.rl_steps:
        cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, steps=args.rl_steps))
    t0 = time.time()
    out = train_organism(args.out, cfg, seed=0, single_problem=False, progress=False)
    seconds = json.loads((out / "pair.json").read_text())["train_seconds"]
    print(f"trained in {time.time() - t0:.0f} s: {seconds}", flush=True)

    pair, task = load_pair(out), ArithTask()
    problems, tok = task.sample("test", args.eval_n), pair.base_tokenizer
    runs = {
        "base": run_generator(pair.base_model, tok, task, problems),
        "base T=1": run_generator(pair.base_model, tok, task, problems, temperature=1.0),
        "base, planted markers forced": run_forced(pair.base_model, tok, task, problems),
        "base, first marker forced": run_forced_first(pair.base_model, tok, task, problems),
        "post-RL": run_generator(pair.post_rl_model, tok, task, problems),
        "post-RL T=1": run_generator(pair.post_rl_model, tok, task, problems, temperature=1.0),
    }
    for name, comps in runs.items():
        s = summarise(task, problems, comps)
        uses = {k: round(v, 2) for k, v in s["uses_per_problem"].items()}
        print(f"{name:30s} acc {s['acc']:.3f}  uses {uses}  multiply_in_place {in_place_share(problems, comps)}  mid-trace {s['mid_trace_choice_rate']:.2f}", flush=True)
    if args.recover:
        subprocess.run([sys.executable, "-m", "latentreason", "recover", "--pair", str(out), "--out", f"{out}-recover", "--decoding", "greedy"], check=True)


if __name__ == "__main__":
    main()
