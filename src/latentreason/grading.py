"""Deterministic final-answer extraction and equivalence for math tasks.

A thin layer over `math-verify <https://github.com/huggingface/Math-Verify>`_:

* :func:`extract_answer` picks the final answer out of a completion: the last ``\\boxed{}``,
  else GSM8K's ``#### x``, else "the answer is x", else the last number.
* :func:`is_equivalent` compares two answer strings with math-verify (fractions, radicals,
  LaTeX forms, sets, intervals, units), after normalising what it does not (``1,000``,
  ``$18``, ``50%`` which equals both ``50`` and ``0.5``), then falls back to sympy on plain
  expressions (``sqrt(2)/2``) and to normalised text (``\\text{Evelyn}`` = ``Evelyn``).
* :func:`grade` combines them; an optional LLM judge replaces the deterministic verdict.

math-verify bounds each parse and comparison with a ``SIGALRM`` timeout, which only works
on the main thread; off the main thread the comparison runs in a worker process instead,
so a pathological answer can never hang the caller.

Example:
    >>> grade("so the total is $\\\\boxed{\\\\frac{1}{2}}$.", "0.5")
    True
    >>> grade("#### 1,000", "1000")
    True
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TIMEOUT_S = 5  # seconds for each math-verify parse or comparison (math-verify's own default)

Judge = Callable[[str, str, str], bool]  # judge(question, completion, gold) -> correct?

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_LAST_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*\d+)?")
_HASHES_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(r"(?i)(?:\banswer\s+is|\bfinal\s+answer\s*:)\s*:?\s*([^\n]+)")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:(?:,|\{,\}|,\\!)\d{3})+(?:\.\d+)?$")
_PERCENT_RE = re.compile(r"\\?%")
_NUMBER_WITH_UNIT_RE = re.compile(rf"^((?:{_NUMBER})(?:\\?%)?)\s+(?:[A-Za-z]{{2,}}\.?(?:\^\d)?\s*)+$")


# ------------------------------------------------------------------ extraction


def extract_answer(text: str | None) -> str | None:
    """The final answer in ``text`` as a string, or None when there is none.

    Tries, in order: the last ``\\boxed{...}`` (or ``\\fbox{...}``, nested braces allowed),
    the last GSM8K ``#### x``, the last "answer is x" / "Final Answer: x", the last number.

    Example:
        >>> extract_answer("First \\\\boxed{1}, then \\\\boxed{\\\\frac{3}{4}}.")
        '\\\\frac{3}{4}'
        >>> extract_answer("The answer is 7.")
        '7'
    """
    if not text:
        return None
    for find in (_last_boxed, _last_hashes, _last_answer_is, _last_number):
        found = find(text)
        if found is not None and found.strip():
            return found.strip()
    return None


def _last_boxed(text: str) -> str | None:
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        rest = text[m.end():]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            inner = _balanced(stripped)
            if inner is not None:
                return inner
        elif rest[:1].isspace() and stripped:  # "\boxed 5"
            return re.split(r"[\s$]", stripped, maxsplit=1)[0]
    return None


def _balanced(s: str) -> str | None:
    """Content of the brace group opening ``s``, or None if it never closes."""
    depth = 0
    for i, ch in enumerate(s):
        if ch == "{" and (i == 0 or s[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and s[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return s[1:i]
    return None


def _last_hashes(text: str) -> str | None:
    found = _HASHES_RE.findall(text)
    return _trim_sentence(found[-1]) if found else None


def _last_answer_is(text: str) -> str | None:
    found = _ANSWER_IS_RE.findall(text)
    return _trim_sentence(found[-1]) if found else None


def _last_number(text: str) -> str | None:
    found = _LAST_NUMBER_RE.findall(text)
    return found[-1].replace(" ", "") if found else None


def _trim_sentence(s: str) -> str:
    """Cut a captured answer at the end of its sentence and drop wrapping ``$``/punctuation."""
    s = re.split(r"\.(?=\s|$)", s.strip(), maxsplit=1)[0]
    s = s.strip().rstrip(".,;:!").strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    return s


# ------------------------------------------------------------------ equivalence


def is_equivalent(pred: str | None, gold: str | None, timeout: int = TIMEOUT_S) -> bool:
    """Whether answer ``pred`` equals answer ``gold`` (both bare answers, not whole completions).

    ``timeout`` bounds each math-verify parse and comparison, in whole seconds. Safe to call
    from any thread: off the main thread the work runs in a worker process.

    Example:
        >>> is_equivalent("\\\\frac{\\\\sqrt{2}}{2}", "1/\\\\sqrt{2}")
        True
        >>> is_equivalent("$18", "18.00"), is_equivalent("50\\\\%", "0.5"), is_equivalent("3", "4")
        (True, True, False)
    """
    if pred is None or gold is None:
        return False
    p, g = _clean(str(pred)), _clean(str(gold))
    if not p or not g:
        return False
    if _plain_text(p) == _plain_text(g):
        return True
    if threading.current_thread() is threading.main_thread():
        return _equivalent(p, g, timeout)
    return _equivalent_in_worker(p, g, timeout)


def _equivalent(pred: str, gold: str, timeout: int) -> bool:
    """math-verify on every percent reading of both sides, then sympy. Main thread only."""
    from math_verify import verify

    golds = [_mv_parse(v, timeout) for v in _percent_readings(gold)]
    for pv in _percent_readings(pred):
        pp = _mv_parse(pv, timeout)
        if not pp:
            continue
        for gp in golds:
            if gp and verify(gp, pp, timeout_seconds=timeout):
                return True
    return _sympy_equivalent(pred, gold, timeout)


def _mv_parse(answer: str, timeout: int) -> list:
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=timeout)


def _clean(s: str) -> str:
    """Normalise what math-verify does not: delimiters, currency, thousands separators, trailing text."""
    s = s.strip().rstrip(".").strip()
    if len(s) > 1 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    s = re.sub(r"^\\\(|\\\)$", "", s).strip()
    s = re.sub(r"\\\$|\$(?=\s*[\d.])", "", s)  # currency: \$18, $18
    s = re.sub(r"\s*(?:\\text\{\s*)?(?:dollars?|USD)\b\}?\s*$", "", s)
    if m := _NUMBER_WITH_UNIT_RE.match(s):  # "18 eggs", "12 cm^2": plain-text units
        s = m.group(1)
    if _THOUSANDS_RE.match(s):
        s = re.sub(r"\{,\}|,\\!|,", "", s)
    return s.strip()


def _percent_readings(s: str) -> list[str]:
    """``50%`` reads as both 50 and 0.5; anything else as itself."""
    if _PERCENT_RE.search(s):
        bare = _PERCENT_RE.sub("", s).strip()
        return [bare, s.replace("\\%", "%").replace("%", "\\%")]
    return [s]


def _plain_text(s: str) -> str:
    """Loose textual form for answers math-verify cannot read (``\\text{Evelyn}``, ``east``)."""
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\ |\s|\$", "", s)
    return s.lower()


_SAFE_EXPR = re.compile(r"^[0-9a-z+\-*/^(). ]+$")
_SAFE_NAMES = {"sqrt", "pi"}  # plus single letters; no other name reaches parse_expr, which evals


def _sympy_equivalent(pred: str, gold: str, timeout: int) -> bool:
    """Fallback for plain-text expressions math-verify does not parse, e.g. ``sqrt(2)/2``."""
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout as with_timeout

    a, b = _sympy_expr(pred), _sympy_expr(gold)
    if a is None or b is None:
        return False

    @with_timeout(timeout_seconds=timeout)
    def same() -> bool:
        import sympy

        return bool(sympy.simplify(a - b) == 0)

    try:
        return same()
    except TimeoutException:
        log.warning("sympy comparison timed out after %ss; counting the answer as wrong", timeout)
        return False
    except Exception:  # sympy raises many types on odd input
        return False


def _sympy_expr(s: str):
    """A sympy expression for a short, whitelisted plain-text formula, else None (never evals free text)."""
    s = s.strip()
    if len(s) > 200 or not _SAFE_EXPR.fullmatch(s) or re.search(r"\.(?!\d)", s):
        return None
    if any(len(name) > 1 and name not in _SAFE_NAMES for name in re.findall(r"[a-z]+", s)):
        return None
    from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations

    try:
        return parse_expr(s.replace("^", "**"), transformations=(*standard_transformations, implicit_multiplication_application), evaluate=True)
    except Exception:
        return None


# ------------------------------------------------------------------ off the main thread


class _Worker:
    """A child Python process that grades JSON lines ``[pred, gold, timeout]`` from stdin.

    It runs the comparison on its own main thread, so math-verify's signal timeouts work
    there; the parent waits at most ``budget`` seconds and kills it past that. Plain JSON over
    a pipe: no pickling, and the caller's ``__main__`` is never re-imported.
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from latentreason.grading import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
        )

    def ask(self, pred: str, gold: str, timeout: int, budget: float) -> bool | None:
        """The worker's verdict, or None when it took longer than ``budget`` seconds (it is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([pred, gold, timeout]) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], budget)
        if not ready:
            self.close()
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"The grading worker process exited (code {self.proc.poll()}); check that `{sys.executable} -c 'import latentreason.grading, math_verify'` works.")
        return bool(json.loads(line))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()


def _serve() -> None:
    """Entry point of :class:`_Worker`'s process."""
    for line in sys.stdin:
        pred, gold, timeout = json.loads(line)
        try:
            ok = _equivalent(pred, gold, timeout)
        except Exception:  # a comparison error is a wrong answer, never a dead worker
            ok = False
        sys.stdout.write(json.dumps(ok) + "\n")
        sys.stdout.flush()


_WORKER: _Worker | None = None
_WORKER_LOCK = threading.Lock()


@atexit.register
def _close_worker() -> None:
    if _WORKER is not None and _WORKER.alive():
        _WORKER.close()


def _equivalent_in_worker(pred: str, gold: str, timeout: int) -> bool:
    """Run :func:`_equivalent` in the worker process, one request at a time."""
    global _WORKER
    if os.name != "posix":  # math-verify times out with processes, not signals, there
        return _equivalent(pred, gold, timeout)
    budget = 30 + 10 * timeout  # worker start-up plus every parse and comparison timing out
    with _WORKER_LOCK:
        if _WORKER is None or not _WORKER.alive():
            _WORKER = _Worker()
        verdict = _WORKER.ask(pred, gold, timeout, budget)
        if verdict is None:
            log.warning("grading worker took over %ss; restarted it and counted the answer as wrong", budget)
            _WORKER = None
            return False
        return verdict


# ------------------------------------------------------------------ grading


def grade(completion: str, gold: str, *, question: str = "", judge: Judge | None = None, judge_votes: int = 1, timeout: int = TIMEOUT_S) -> bool:
    """Whether ``completion``'s final answer equals ``gold``.

    With ``judge`` (off by default), the verdict is instead the majority of ``judge_votes``
    calls ``judge(question, completion, gold)``; a tie counts as wrong.

    Example:
        >>> grade("3 + 4 = 7, so the answer is 7.", "7")
        True
    """
    if judge is not None:
        if judge_votes < 1:
            raise ValueError(f"judge_votes={judge_votes} must be at least 1.")
        yes = sum(bool(judge(question, completion, gold)) for _ in range(judge_votes))
        return yes * 2 > judge_votes
    return is_equivalent(extract_answer(completion), gold, timeout=timeout)
