"""Evaluate an organism pair: accuracy, reasoning rate and strategy use, greedy and sampled."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from latentreason.generation import decode
from latentreason.pair import ModelPair
from latentreason.tasks.arith import STRATEGIES, ArithConfig, ArithTask, Problem, strategy_labels

FORCED_MARKER = "S:"  # the first step's strategy marker, forced to put the base model into a worked solution


def is_reasoning(completion: str) -> bool:
    """A completion reasons when it has any sentence besides the final answer."""
    labels = strategy_labels(completion)
    return any(l not in (None, "answer") for l in labels)


def run_generator(model, tok, task: ArithTask, problems: list[Problem], *, temperature: float = 0.0, seed: int = 0, prefix: str = "", max_new_tokens: int = 128, batch_size: int = 256) -> list[str]:
    """Completions of ``model`` on ``problems`` (``prefix`` is forced after the prompt and kept in the text)."""
    out: list[str] = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        ids = tok([task.prompt(p) + prefix for p in chunk], return_tensors="pt").input_ids
        res = decode(model, ids, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temperature, seed=seed + i)
        out += [prefix + c for c in res.completions(tok)]
    return out


def summarise(task: ArithTask, problems: list[Problem], completions: list[str]) -> dict[str, Any]:
    n = len(problems)
    uses: Counter[str] = Counter()
    for c in completions:
        uses.update(l for l in strategy_labels(c) if l)
    return {
        "acc": sum(task.grade(p, c) for p, c in zip(problems, completions)) / n,
        "reasoning_rate": sum(is_reasoning(c) for c in completions) / n,
        "uses_per_problem": {s: uses[s] / n for s in STRATEGIES},
    }


@torch.no_grad()
def evaluate_pair(pair: ModelPair, n: int = 600, split: str = "test", seed: int = 0, include_extras: bool = True) -> dict[str, Any]:
    """The organism eval JSON (see ``latentreason organism eval``)."""
    task = ArithTask(ArithConfig(**pair.task_config)) if pair.task_config else ArithTask()
    problems = task.sample(split, n, seed=seed)
    tok = pair.base_tokenizer
    max_new = int(pair.defaults.get("max_new_tokens", 128))
    res: dict[str, Any] = {"n": n, "split": split, "seed": seed}
    roles = ["base", "post_rl"] + (list(pair.extras) if include_extras else [])
    per: dict[str, dict[str, Any]] = {}
    for role in roles:
        model = pair.model(role)
        greedy = summarise(task, problems, run_generator(model, tok, task, problems, max_new_tokens=max_new))
        sampled = summarise(task, problems, run_generator(model, tok, task, problems, temperature=1.0, seed=seed, max_new_tokens=max_new))
        per[role] = {"greedy": greedy, "sampled": sampled}
        res[f"{role}_greedy_acc"] = greedy["acc"]
        res[f"{role}_sampled_acc"] = sampled["acc"]
        res[f"{role}_reasoning_rate"] = greedy["reasoning_rate"]
        res[f"{role}_strategy_uses"] = greedy["uses_per_problem"]
    forced = summarise(task, problems, run_generator(pair.base_model, tok, task, problems, prefix=FORCED_MARKER, max_new_tokens=max_new))
    res["base_forced_reasoning_acc"] = forced["acc"]
    res["base_forced_strategy_uses"] = forced["uses_per_problem"]
    res["details"] = per
    return res
