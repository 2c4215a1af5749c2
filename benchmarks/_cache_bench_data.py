"""Shared inputs of the cache benchmarks: a pair and a run of organism-style rollouts."""

from __future__ import annotations

import json
from pathlib import Path

from latentreason.organism.corpus import CorpusConfig, make_corpus
from latentreason.pair import PAIR_KIND, load_pair, pair_weight_hashes
from latentreason.rollouts import make_row, task_for_pair, write_rollouts


def load_bench_pair(spec: str, scratch: Path, hidden: int = 512, layers: int = 8):
    """``organism``, a pair directory, or ``random``: a random-weight Qwen2 pair with the organism tokenizer."""
    if spec != "random":
        return load_pair(spec)
    from latentreason.organism.model import ModelConfig, build_model
    from latentreason.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = ModelConfig(hidden_size=hidden, num_layers=layers, num_heads=8, num_kv_heads=4, intermediate_size=4 * hidden, max_positions=256)
    for seed, role in enumerate(("base", "post_rl")):
        model = build_model(cfg, tok, seed=seed)
        model.save_pretrained(scratch / role)
        tok.save_pretrained(scratch / role)
    models = {"base": "base", "post_rl": "post_rl"}
    (scratch / "pair.json").write_text(json.dumps({"kind": PAIR_KIND, "name": "random", "task": "arith", "task_config": {}, "models": models, "hashes": pair_weight_hashes(scratch, models)}))
    return load_pair(scratch)


def write_synthetic_run(pair, run: Path, n: int, seed: int = 0) -> Path:
    """``n`` worked solutions (steps, checks, corrections) written as a rollouts artifact of ``pair``."""
    task = task_for_pair(pair)
    exs = make_corpus(task, n, CorpusConfig(worked_fraction=0.9, switch_continue=1.0), seed=seed)
    rows = [make_row(task, rollout_id=f"r{i:06d}", model="post_rl", split="train", index=i, problem=ex.problem, completion=ex.completion) for i, ex in enumerate(exs)]
    write_rollouts(run / "rollouts", rows, pair, task, {"synthetic": True, "n": n})
    return run
