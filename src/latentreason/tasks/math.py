"""Real math tasks, GSM8K and MATH-500, with the interface of :class:`~latentreason.tasks.arith.ArithTask`.

Both datasets are test sets. So that steering vectors and routers are never fit on the
problems they are evaluated on, each is partitioned once, by a hash of the question text,
into ``train`` / ``dev`` / ``test`` with fractions 0.3 / 0.1 / 0.6 (GSM8K: about 396 / 132 / 791
problems; MATH-500: about 150 / 50 / 300). The partition does not depend on file order or
on which subset of the file is loaded.

Example:
    >>> task = MathTask("gsm8k", data=[MathProblem("p1", "What is 2+3?", "5")])
    >>> task.grade(task.problems[0], "2 + 3 = 5.\\n#### 5")
    True
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latentreason import grading

log = logging.getLogger(__name__)

NAMES = ("gsm8k", "math500")
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = (0.3, 0.1, 0.6)  # train / dev / test, by hash of the question


@dataclass(frozen=True)
class MathProblem:
    """One problem with its reference answer (``gold``: a number for GSM8K, LaTeX for MATH)."""

    id: str
    question: str
    gold: str
    solution: str | None = None  # worked reference solution, when the dataset has one
    level: int | None = None  # MATH difficulty 1-5
    subject: str | None = None  # MATH subject, e.g. "Algebra"

    def __post_init__(self) -> None:
        for name in ("id", "question", "gold"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"MathProblem.{name} must be a non-empty string, got {getattr(self, name)!r}.")


def question_hash(question: str) -> float:
    """A number in [0, 1] fixed by the question text: the basis of ids and splits."""
    return int(hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


def _distinct_questions(name: str, problems: Sequence[MathProblem]) -> tuple[MathProblem, ...]:
    """``problems`` with repeated questions dropped (the first copy kept), so samples never hold one question twice.

    Copies of a question share its hash, hence its split: kept, they would be drawn as if
    independent. A question repeated with another gold answer is a data error and is refused.
    """
    first: dict[str, MathProblem] = {}
    for p in problems:
        q = p.question.strip()
        if q not in first:
            first[q] = p
        elif first[q].gold != p.gold:
            raise ValueError(f"Task {name!r}: question {q[:80]!r} appears twice with different gold answers ({first[q].gold!r} and {p.gold!r}); fix or drop one of the rows.")
    if len(first) < len(problems):
        log.warning("Task %r: dropped %d repeated question(s) of %d, keeping the first copy of each: a sample never holds one question twice.", name, len(problems) - len(first), len(problems))
    return tuple(first.values())


class MathTask:
    """GSM8K or MATH-500: sample problems per split, prompt with the question, grade final answers.

    Args:
        name: ``"gsm8k"`` or ``"math500"``.
        data: a local JSONL / Parquet file (or a directory holding one) in the hub schema, a
            list of :class:`MathProblem`, or None to load through the ``datasets`` library.
            Loaded on first use.
        judge: optional LLM judge ``judge(question, completion, gold) -> bool``; off by default.
        judge_votes: judge calls per grade, majority wins.
    """

    def __init__(
        self,
        name: str,
        data: str | os.PathLike | Sequence[MathProblem] | None = None,
        *,
        split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
        judge: grading.Judge | None = None,
        judge_votes: int = 1,
    ) -> None:
        if name not in NAMES:
            raise ValueError(f"Unknown math task {name!r}: expected one of {', '.join(NAMES)}.")
        fr = tuple(split_fractions)
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-9:
            raise ValueError(f"split_fractions={fr} must be three non-negative numbers summing to 1.")
        if judge_votes < 1:
            raise ValueError(f"judge_votes={judge_votes} must be at least 1.")
        self.name = name
        self.data = data
        self.split_fractions = fr
        self.judge = judge
        self.judge_votes = judge_votes
        self._problems: tuple[MathProblem, ...] | None = None

    def __repr__(self) -> str:
        data = f"<{len(self.data)} problems>" if isinstance(self.data, (list, tuple)) else repr(self.data)
        return f"MathTask({self.name!r}, data={data})"

    @property
    def problems(self) -> tuple[MathProblem, ...]:
        """Every problem of the dataset, in file order (loaded on first access)."""
        if self._problems is None:
            if isinstance(self.data, (list, tuple)):
                probs = tuple(self.data)
                bad = [p for p in probs if not isinstance(p, MathProblem)]
                if bad:
                    raise TypeError(f"MathTask data must be MathProblem objects or a file path, got {type(bad[0]).__name__}.")
            else:
                from latentreason import datasets

                probs = tuple(datasets.load(self.name, self.data))
            if not probs:
                raise ValueError(f"Task {self.name!r} has no problems (data={self.data!r}).")
            self._problems = _distinct_questions(self.name, probs)
        return self._problems

    def split_of(self, problem: MathProblem) -> str:
        h = question_hash(problem.question)
        train, dev, _ = self.split_fractions
        return "train" if h < train else "dev" if h < train + dev else "test"

    def split(self, split: str) -> list[MathProblem]:
        """All problems of ``split``, in file order."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")
        return [p for p in self.problems if self.split_of(p) == split]

    def sample(self, split: str, n: int | None = None, seed: int = 0) -> list[MathProblem]:
        """``n`` distinct problems of ``split`` (all of them, in file order, when ``n`` is None), deterministic in ``seed``.

        A question is never drawn twice (repeated rows are dropped on load); a split with fewer
        than ``n`` problems is refused with the largest ``n`` allowed.
        """
        pool = self.split(split)
        if n is None:
            return pool
        if n < 0:
            raise ValueError(f"n={n} must be non-negative.")
        if n > len(pool):
            raise ValueError(f"Asked for {n} {self.name} problems from split {split!r}, which has only {len(pool)} (fractions train/dev/test = {self.split_fractions}); ask for at most {len(pool)}.")
        return random.Random(f"{self.name}:{split}:{seed}").sample(pool, n)

    def prompt(self, problem: MathProblem) -> str:
        """The question text; model-specific templates are applied by the pair."""
        return problem.question

    @staticmethod
    def gold(problem: MathProblem) -> str:
        """The reference answer."""
        return problem.gold

    @staticmethod
    def extract_answer(completion: str) -> str | None:
        return grading.extract_answer(completion)

    def grade(self, problem: MathProblem, completion: str) -> bool:
        return grading.grade(completion, problem.gold, question=problem.question, judge=self.judge, judge_votes=self.judge_votes)

    @staticmethod
    def problem_to_json(problem: MathProblem) -> dict[str, Any]:
        return {"id": problem.id, "question": problem.question, "gold": problem.gold}

    @staticmethod
    def problem_from_json(obj: dict[str, Any]) -> MathProblem:
        if not isinstance(obj, dict) or not {"id", "question", "gold"} <= set(obj):
            raise ValueError(f"Not a serialised math problem: {obj!r:.200} (expected a dict with id, question, gold).")
        known = {"id", "question", "gold", "solution", "level", "subject"}
        return MathProblem(**{k: v for k, v in obj.items() if k in known})
