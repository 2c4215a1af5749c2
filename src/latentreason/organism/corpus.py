"""The organism's pretraining corpus: mostly direct answers, some worked solutions.

Worked solutions use the right strategy for every operation, but often stop working where
the next operation needs *another* strategy and answer directly there: the base model
learns every strategy, yet does not know to keep going at a switch.

Each worked solution is a list of sentences with their planted strategy label, kept
beside the text (not only in its markers), so later stages can be checked against it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from latentreason.tasks.arith import ArithTask, Problem, planted_solution


@dataclass(frozen=True)
class CorpusConfig:
    worked_fraction: float = 0.25  # share of solutions that start working: greedy decoding answers directly, by a margin (3:1) a random push cannot tip
    switch_continue: float = 0.4  # chance a worked solution goes on where the next operation needs another strategy (else it answers)

    def __post_init__(self) -> None:
        for name in ("worked_fraction", "switch_continue"):
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


def worked_solution(problem: Problem, rng: random.Random, cfg: CorpusConfig, width: int) -> tuple[list[str], list[str]]:
    """The planted solution (see :mod:`latentreason.tasks.arith`), cut short with a direct answer at a strategy switch with chance ``1 - switch_continue``."""
    sents, labels = planted_solution(problem, width)
    for j in range(1, len(problem.ops)):
        if labels[j] != labels[j - 1] and rng.random() >= cfg.switch_continue:
            return sents[:j] + [sents[-1]], labels[:j] + ["answer"]
    return sents, labels


def make_corpus(task: ArithTask, n: int, cfg: CorpusConfig, seed: int = 0, split: str = "train") -> list[Example]:
    """``n`` training examples from ``split``, deterministic in ``seed``."""
    rng = random.Random(f"corpus:{seed}")
    out = []
    for p in task.sample(split, n, seed=seed, distinct=False):  # a training pool: drawn with replacement, as the shipped organism was trained
        sents, labels = worked_solution(p, rng, cfg, task.config.line_width) if rng.random() < cfg.worked_fraction else direct_solution(p)
        out.append(Example(p, task.prompt(p), tuple(sents), tuple(labels)))
    return out
