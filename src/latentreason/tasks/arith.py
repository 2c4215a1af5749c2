"""The organism's task: left-to-right modular arithmetic over single digits.

``3+4*2-7`` is evaluated left to right, mod 10: ((3+4)*2-7) % 10 = 7. Prompts are
right-aligned to a fixed width so that batches need no padding. A completion is a
sequence of *sentences*, one per line, each opening with a strategy marker. Each kind of
operation has its own strategy, a different procedure written in its own form::

    "    3+4*2-7="               prompt
    "S:         3+4=7*2-7"       step: the addition done in place, the rest copied down
    "M:        7*2=14=4-7"       multiply: the full product, then its last digit
    "D:         4-7=4+3=7"       difference: subtract by adding the complement
    "A:7"                        final answer

Worked lines are right-aligned to one width, so the running value and the rest of the
expression always sit in the same columns as in the line above: each step is local (copy
from the line above, apply one operation, copy the rest straight down), which a tiny model
learns reliably. A direct answer is the single sentence ``A:7``. *Whether* to work the next
operation and *which* strategy to use are the model's decisions, taken at every line: the
post-RL model works every operation with its strategy.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass, field

OPS = ("+", "-", "*")
SPLITS = ("train", "dev", "test")
MARKERS = {"S": "step", "D": "difference", "M": "multiply", "A": "answer"}
STRATEGIES = tuple(MARKERS.values())
MARKER_OF = {v: k for k, v in MARKERS.items()}
STRATEGY_OF_OP = {"+": "step", "-": "difference", "*": "multiply"}  # the planted right strategy for each operation
_ANSWER_RE = re.compile(r"(?m)^A:(\d)")


def apply_op(a: int, op: str, b: int, modulus: int = 10) -> int:
    if op == "+":
        return (a + b) % modulus
    if op == "-":
        return (a - b) % modulus
    if op == "*":
        return (a * b) % modulus
    raise ValueError(f"Unknown op {op!r}: expected one of {OPS}.")


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: digits and the ops between them."""

    digits: tuple[int, ...]
    ops: tuple[str, ...]
    modulus: int = 10

    @property
    def expr(self) -> str:
        out = str(self.digits[0])
        for op, d in zip(self.ops, self.digits[1:]):
            out += op + str(d)
        return out

    @property
    def intermediates(self) -> list[int]:
        """Running values after each step (the last one is the answer)."""
        acc, vals = self.digits[0], []
        for op, d in zip(self.ops, self.digits[1:]):
            acc = apply_op(acc, op, d, self.modulus)
            vals.append(acc)
        return vals

    def rest(self, j: int) -> str:
        """The expression still to evaluate after step ``j`` (0-based), without its leading value."""
        return "".join(op + str(d) for op, d in zip(self.ops[j + 1 :], self.digits[j + 2 :]))

    @property
    def answer(self) -> int:
        return self.intermediates[-1]

    @classmethod
    def parse(cls, expr: str, modulus: int = 10) -> Problem:
        expr = expr.strip().rstrip("=")
        if not re.fullmatch(r"\d([+\-*]\d)+", expr):
            raise ValueError(f"Not an organism problem: {expr!r} (expected e.g. '3+4*2').")
        return cls(tuple(int(c) for c in expr[0::2]), tuple(expr[1::2]), modulus)


@dataclass(frozen=True)
class ArithConfig:
    """Problem distribution of the organism's task."""

    min_k: int = 2  # digits per problem
    max_k: int = 6
    ops: tuple[str, ...] = OPS
    modulus: int = 10
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/dev/test by hash of the expression

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "split_fractions", tuple(self.split_fractions))
        if not (2 <= self.min_k <= self.max_k):
            raise ValueError(f"Empty or invalid k range [{self.min_k}, {self.max_k}]: need 2 <= min_k <= max_k.")
        if self.max_k > 9:
            raise ValueError(f"max_k={self.max_k} is too long for the organism (at most 9 digits).")
        if not self.ops or any(op not in OPS for op in self.ops):
            raise ValueError(f"Unknown op in {self.ops}: allowed ops are {OPS}.")
        if self.modulus != 10:
            raise ValueError(f"modulus={self.modulus}: the organism's character tokenizer supports modulus 10 only.")
        fr = self.split_fractions
        if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-9:
            raise ValueError(f"split_fractions={fr} must be three non-negative numbers summing to 1.")

    @property
    def prompt_width(self) -> int:
        return 2 * self.max_k - 1

    @property
    def line_width(self) -> int:
        """Width of a worked line's body (after its 3-character head such as ``"S: "``): room for the longest step, ``"4-7=4+3=7"``, and the rest."""
        return self.prompt_width + 6


@dataclass
class ArithTask:
    """Generates problems per split, formats prompts, grades completions."""

    config: ArithConfig = field(default_factory=ArithConfig)
    name: str = "arith"

    def split_of(self, problem: Problem) -> str:
        h = int(hashlib.sha256(problem.expr.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        train, dev, _ = self.config.split_fractions
        return "train" if h < train else "dev" if h < train + dev else "test"

    def sample(self, split: str, n: int, seed: int = 0, distinct: bool = True) -> list[Problem]:
        """``n`` problems from ``split``, deterministic in ``seed``; splits never overlap.

        ``distinct=True`` (the default, for everything evaluated or cached) returns ``n``
        different problems: the first ``n`` distinct ones of the seeded stream of draws, so a
        smaller sample is a prefix of a larger one. This is sampling without replacement from
        the task's distribution: once a split's few short problems are used up (the test split
        holds about 30 two-digit problems), later draws of them are skipped, so large samples
        hold fewer of the shortest problems than independent draws would. A split with fewer
        distinct problems than ``n`` is refused (ValueError naming how many it has).
        ``distinct=False`` draws with replacement; only the organism's training pools (pretraining
        corpus, RL pool) use it, so the shipped pair retrains bit-identically.
        """
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")
        if n < 0:
            raise ValueError(f"n={n} must be non-negative.")
        if distinct:
            size = self.split_size(split)
            if size is not None and n > size:
                raise ValueError(f"Asked for {n} distinct problems from split {split!r}, which has only {size} under {self.config}; ask for at most {size} or widen the problem range (max_k, ops).")
        rng = random.Random(f"{split}:{seed}")
        c, out, seen = self.config, [], set()
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 1000 * (n + 10):
                raise ValueError(f"Could not draw {n} {'distinct ' if distinct else ''}problems for split {split!r} in {tries - 1} tries under {self.config}; ask for fewer or widen the k range.")
            k = rng.randint(c.min_k, c.max_k)
            p = Problem(tuple(rng.randrange(c.modulus) for _ in range(k)), tuple(rng.choice(c.ops) for _ in range(k - 1)), c.modulus)
            if self.split_of(p) == split and not (distinct and p in seen):
                out.append(p)
                seen.add(p)
        return out

    def split_size(self, split: str) -> int | None:
        """How many distinct problems ``split`` holds, counted exactly when the problem space is small (else None: far more than any sample)."""
        return _split_sizes(self.config).get(split)

    def prompt(self, problem: Problem) -> str:
        """Right-aligned expression followed by '=', always ``prompt_width + 1`` characters."""
        return problem.expr.rjust(self.config.prompt_width) + "="

    @staticmethod
    def extract_answer(completion: str) -> int | None:
        """The digit of the last ``A:`` sentence, or None."""
        found = _ANSWER_RE.findall(completion)
        return int(found[-1]) if found else None

    def grade(self, problem: Problem, completion: str) -> bool:
        return self.extract_answer(completion) == problem.answer

    @staticmethod
    def problem_to_json(problem: Problem) -> str:
        """JSON form of a problem: its expression, e.g. ``"3+4*2"``."""
        return problem.expr

    def problem_from_json(self, obj: str) -> Problem:
        """Inverse of :meth:`problem_to_json`."""
        if not isinstance(obj, str):
            raise ValueError(f"Not a serialised arith problem: {obj!r:.200} (expected an expression string such as '3+4*2').")
        return Problem.parse(obj, self.config.modulus)


_COUNT_LIMIT = 300_000  # problem spaces up to this size are enumerated to count each split exactly


@functools.lru_cache(maxsize=16)
def _split_sizes(config: ArithConfig) -> dict[str, int]:
    """Exact number of distinct problems per split for a small problem space; {} for a large one."""
    c = config
    if sum(c.modulus**k * len(c.ops) ** (k - 1) for k in range(c.min_k, c.max_k + 1)) > _COUNT_LIMIT:
        return {}
    train, dev, _ = c.split_fractions
    counts = dict.fromkeys(SPLITS, 0)
    for k in range(c.min_k, c.max_k + 1):  # the expression strings ArithTask.split_of hashes, without building problems
        for chars in itertools.product(*([[str(d) for d in range(c.modulus)]] + [[o + str(d) for o in c.ops for d in range(c.modulus)]] * (k - 1))):
            h = int(hashlib.sha256("".join(chars).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            counts["train" if h < train else "dev" if h < train + dev else "test"] += 1
    return counts


def step_body(problem: Problem, j: int, acc: int, width: int) -> str:
    """Body of step ``j`` from running value ``acc``, in the form of the operation's strategy, right-aligned to ``width``."""
    op, d = problem.ops[j], problem.digits[j + 1]
    r = apply_op(acc, op, d, problem.modulus)
    if op == "+":
        body = f"{acc}+{d}={r}"
    elif op == "-":
        body = f"{acc}-{d}={acc}+{(problem.modulus - d) % problem.modulus}={r}"
    else:
        body = f"{acc}*{d}={acc * d:02d}={r}"
    return (body + problem.rest(j)).rjust(width)


def planted_solution(problem: Problem, width: int) -> tuple[list[str], list[str]]:
    """The full worked solution, one line per operation with that operation's strategy, then the answer; and its labels."""
    sents, labels, acc = [], [], problem.digits[0]
    for j, op in enumerate(problem.ops):
        strategy = STRATEGY_OF_OP[op]
        sents.append(f"{MARKER_OF[strategy]}: {step_body(problem, j, acc, width)}")
        labels.append(strategy)
        acc = apply_op(acc, op, problem.digits[j + 1], problem.modulus)
    return sents + [f"A:{acc}"], labels + ["answer"]


def strategy_labels(completion: str) -> list[str | None]:
    """Planted strategy of each line of a completion (None for unmarked lines)."""
    labels: list[str | None] = []
    for line in completion.split("\n"):
        if not line:
            continue
        labels.append(MARKERS.get(line[0]) if len(line) > 1 and line[1] == ":" else None)
    return labels
