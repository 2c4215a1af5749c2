"""The organism's pretraining corpus: mostly direct answers, some worked solutions.

Each worked solution is a list of sentences with their planted strategy label, kept
beside the text (not only in its markers), so later stages can be checked against it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from latentreason.tasks.arith import ArithTask, Problem, apply_op


@dataclass(frozen=True)
class CorpusConfig:
    worked_fraction: float = 0.4  # share of worked solutions: enough to learn the steps fast, few enough that greedy decoding answers directly
    step_error_rate: float = 0.05  # chance a step's result is wrong (always followed by check + correction)
    check_rate: float = 0.15  # chance of a check after a correct step

    def __post_init__(self) -> None:
        for name in ("worked_fraction", "step_error_rate", "check_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} must lie in [0, 1].")


@dataclass(frozen=True)
class Example:
    problem: Problem
    prompt: str
    sentences: tuple[str, ...]  # each without its trailing newline
    labels: tuple[str, ...]  # planted strategy per sentence

    @property
    def completion(self) -> str:
        return "".join(s + "\n" for s in self.sentences)

    @property
    def worked(self) -> bool:
        return len(self.sentences) > 1


def direct_solution(problem: Problem) -> tuple[list[str], list[str]]:
    return [f"A:{problem.answer}"], ["answer"]


def step_body(problem: Problem, j: int, acc: int, result: int, width: int) -> str:
    """Body of step ``j``: ``"{acc}{op}{digit}={result}{rest}"`` right-aligned to ``width``."""
    return f"{acc}{problem.ops[j]}{problem.digits[j + 1]}={result}{problem.rest(j)}".rjust(width)


def worked_solution(problem: Problem, rng: random.Random, cfg: CorpusConfig, width: int) -> tuple[list[str], list[str]]:
    """Aligned worked solution (see :mod:`latentreason.tasks.arith`); planted step errors are repaired by check + correction."""
    sents, labels = [], []
    acc = problem.digits[0]
    for j, op in enumerate(problem.ops):
        true = apply_op(acc, op, problem.digits[j + 1], problem.modulus)
        good = step_body(problem, j, acc, true, width)
        if rng.random() < cfg.step_error_rate:
            wrong = (true + rng.randrange(1, problem.modulus)) % problem.modulus
            sents += [f"S: {step_body(problem, j, acc, wrong, width)}", f"C:n{good}", f"R: {good}"]
            labels += ["step", "check", "correction"]
        else:
            sents.append(f"S: {good}")
            labels.append("step")
            if rng.random() < cfg.check_rate:
                sents.append(f"C:y{good}")
                labels.append("check")
        acc = true
    sents.append(f"A:{acc}")
    labels.append("answer")
    return sents, labels


def make_corpus(task: ArithTask, n: int, cfg: CorpusConfig, seed: int = 0, split: str = "train") -> list[Example]:
    """``n`` training examples from ``split``, deterministic in ``seed``."""
    rng = random.Random(f"corpus:{seed}")
    out = []
    for p in task.sample(split, n, seed=seed):
        sents, labels = worked_solution(p, rng, cfg, task.config.line_width) if rng.random() < cfg.worked_fraction else direct_solution(p)
        out.append(Example(p, task.prompt(p), tuple(sents), tuple(labels)))
    return out
