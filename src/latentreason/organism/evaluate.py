"""Evaluate an organism pair: accuracy, reasoning rate and strategy use, greedy and sampled."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import torch

from latentreason.generation import decode, left_pad
from latentreason.pair import ModelPair
from latentreason.tasks.arith import MARKER_OF, STRATEGIES, STRATEGY_OF_OP, ArithConfig, ArithTask, Problem, planted_solution, strategy_labels


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


@torch.no_grad()
def run_forced(model, tok, task: ArithTask, problems: list[Problem], *, batch_size: int = 256) -> list[str]:
    """Greedy completions with every line's strategy marker forced to the planted one; the model writes each line's body.

    This asks whether the model *knows how* to carry out each strategy once told which
    one to use where: the skill without the choice.
    """
    plans = [[MARKER_OF[l] + ":" for l in planted_solution(p, task.config.line_width)[1]] for p in problems]
    texts = [""] * len(problems)
    line_budget = task.config.line_width + 2
    for j in range(max(len(m) for m in plans)):
        todo = [i for i, m in enumerate(plans) if j < len(m)]
        for b in range(0, len(todo), batch_size):
            idx = todo[b : b + batch_size]
            for i in idx:
                texts[i] += plans[i][j]
            rows = [tok(task.prompt(problems[i]) + texts[i]).input_ids for i in idx]
            ids, mask = left_pad(rows, tok.pad_token_id)
            res = decode(model, ids, mask, max_new_tokens=line_budget, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            for i, c in zip(idx, res.completions(tok)):
                texts[i] += c.split("\n", 1)[0] + "\n"
    return texts


def run_forced_first(model, tok, task: ArithTask, problems: list[Problem], *, max_new_tokens: int = 128) -> list[str]:
    """Greedy completions with only the first line's planted strategy marker forced."""
    out: list[str] = [""] * len(problems)
    by_marker: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_marker.setdefault(MARKER_OF[STRATEGY_OF_OP[p.ops[0]]] + ":", []).append(i)
    for marker, idx in by_marker.items():
        for i, c in zip(idx, run_generator(model, tok, task, [problems[i] for i in idx], prefix=marker, max_new_tokens=max_new_tokens)):
            out[i] = c
    return out


def mid_trace_stats(completions: list[str]) -> dict[str, float]:
    """How often a trace chooses a strategy after its first sentence, and changes strategy mid-trace."""
    n = len(completions) or 1
    mid, switch = 0, 0
    for c in completions:
        steps = [l for l in strategy_labels(c) if l not in (None, "answer")]
        mid += len(steps) > 1
        switch += any(a != b for a, b in pairwise(steps))
    return {"mid_trace_choice_rate": mid / n, "mid_trace_switch_rate": switch / n}


def summarise(task: ArithTask, problems: list[Problem], completions: list[str]) -> dict[str, Any]:
    n = len(problems)
    uses: Counter[str] = Counter()
    for c in completions:
        uses.update(l for l in strategy_labels(c) if l)
    return {
        "acc": sum(task.grade(p, c) for p, c in zip(problems, completions)) / n,
        "reasoning_rate": sum(is_reasoning(c) for c in completions) / n,
        "uses_per_problem": {s: uses[s] / n for s in STRATEGIES},
        **mid_trace_stats(completions),
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
    forced = summarise(task, problems, run_forced(pair.base_model, tok, task, problems))
    res["base_forced_reasoning_acc"] = forced["acc"]
    res["base_forced_strategy_uses"] = forced["uses_per_problem"]
    first = summarise(task, problems, run_forced_first(pair.base_model, tok, task, problems, max_new_tokens=max_new))
    res["base_forced_first_acc"] = first["acc"]  # only the first line's marker forced: the base stops where the strategy switches
    res["post_rl_mid_trace_choice_rate"] = per["post_rl"]["greedy"]["mid_trace_choice_rate"]
    res["post_rl_mid_trace_switch_rate"] = per["post_rl"]["greedy"]["mid_trace_switch_rate"]
    per["base_forced"] = {"greedy": forced}
    per["base_forced_first"] = {"greedy": first}
    res["details"] = per
    return res
