"""Deterministic final-answer extraction and equivalence for math tasks.

A thin layer over `math-verify <https://github.com/huggingface/Math-Verify>`_:

* :func:`extract_answer` picks the final answer out of a completion with one pipeline of
  ordered anchors: the region after ``</think>``, then ``<answer>`` tags, the last
  ``\\boxed{}``, GSM8K's ``#### x``, "the answer is" / "Final Answer:" / "Answer:" (bold and
  markdown allowed), and finally the last mathematical expression (a whole ``$\\frac{3}{56}$``,
  never its trailing digits).
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
    >>> grade("Final Answer: The final answer is $18$. I hope it is correct.", "18")
    True
"""

from __future__ import annotations

import atexit
import functools
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

from latentreason.segment import math_span_at, math_spans

log = logging.getLogger(__name__)

TIMEOUT_S = 5  # seconds for each math-verify parse or comparison (math-verify's own default)

Judge = Callable[[str, str, str], bool]  # judge(question, completion, gold) -> correct?

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_LAST_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?:\s*/\s*\d+)?")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:(?:,|\{,\}|,\\!)\d{3})+(?:\.\d+)?$")
_PERCENT_RE = re.compile(r"\\?%")
_NUMBER_WITH_UNIT_RE = re.compile(rf"^((?:{_NUMBER})(?:\\?%)?)\s+(?:[A-Za-z]{{2,}}\.?(?:\^\d)?\s*)+$")

# Where the answer is announced, case-insensitive; the last one in the text wins.
#   "The (final) answer is", "answer would be", "Final Answer:", "Answer:", "**Answer:**",
#   and a heading line of its own: "### Final Answer", "**Final Answer**".
_ANCHOR_RE = re.compile(
    r"(?im)\b(?:final\s+)?answer(?:\s+to\s+th(?:e|is)\s+(?:question|problem))?\s*(?:\*\*|__)?\s*"
    r"(?:(?:is|would\s+be|should\s+be|will\s+be)\b[ \t]*:?|:|=)"
    r"|^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*final[ \t]+answer[ \t]*(?:\*\*|__)?[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*$"
)
_HASHES_RE = re.compile(r"####")
_ANSWER_TAG_RE = re.compile(r"(?is)<answer>(.*?)(?:</answer>|\Z)")
_THINK_END_RE = re.compile(r"(?i)</think>")
# A base model running on into a new item of its few-shot template ("Question: ...").
_RUN_ON_RE = re.compile(r"\n[ \t]*(?:Question|Problem)[ \t]*\d*[ \t]*:")
_SENTENCE_END_RE = re.compile(r"\n|(?<!\\)[.!?;](?=\s|\Z)|\s+(?:because|since|which|but)\b|\*\*")
_MAX_ANSWER_CHARS = 300


# ------------------------------------------------------------------ extraction


def extract_answer(text: str | None) -> str | None:
    """The final answer in ``text`` as a string, or None when there is none.

    One pipeline, in two steps. First the *region* that holds the answer: after the last
    ``</think>`` (R1-style models), and before a base model runs on into a new
    ``Question:`` of its few-shot template. Then, in that region, the first of these that finds
    an answer (each taking its last occurrence):

    1. an ``<answer>...</answer>`` block (R1-Zero / RL templates), read by the steps below or whole;
    2. ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed);
    3. GSM8K's ``#### x``;
    4. an announcing phrase: "the (final) answer is", "Final Answer:", "Answer:", "**Answer:**",
       a "### Final Answer" heading (so Minerva's "Final Answer: The final answer is $18$. I hope
       it is correct." reads the ``$18$``); the answer after it is a math span (``$...$``,
       ``\\[...\\]``, ``\\(...\\)``), a bold span (``**18**``) or the rest of its sentence;
    5. the last mathematical expression: the last delimited math span (the last row of an
       aligned environment) or the last number together with the LaTeX it is written in
       (``3\\sqrt{13}``, ``\\frac{3}{56}``), whichever comes later.

    If the region after ``</think>`` yields nothing, the whole text is read the same way.
    ``$`` delimits math only as in pandoc (an opening ``$`` followed by a non-space, a closing
    one preceded by a non-space and not followed by a digit), so currency (``$5 and $6``) never
    pairs up. Units, thousands separators, ``\\text{}``, currency and percentages are left on the
    answer for :func:`is_equivalent` to normalise.

    Example:
        >>> extract_answer("First \\\\boxed{1}, then \\\\boxed{\\\\frac{3}{4}}.")
        '\\\\frac{3}{4}'
        >>> extract_answer("The answer is **7**.")
        '7'
        >>> extract_answer("Final Answer: The final answer is $18$. I hope it is correct.")
        '18'
        >>> extract_answer("so the distance is $3\\\\sqrt{13}$.")
        '3\\\\sqrt{13}'
    """
    if not text:
        return None
    region = _answer_region(text)
    found = _extract(region)
    if found is None and region != text:
        found = _extract(text)
    return found


def _answer_region(text: str) -> str:
    """The part of ``text`` that holds the final answer: after ``</think>``, before a run-on next question."""
    ends = list(_THINK_END_RE.finditer(text))
    if ends:
        text = text[ends[-1].end():]
    m = _RUN_ON_RE.search(text)
    if m and text[: m.start()].strip():
        text = text[: m.start()]
    return text


def _extract(text: str) -> str | None:
    tags = list(_ANSWER_TAG_RE.finditer(text))
    if tags:
        inner = tags[-1].group(1)
        found = _first((_last_boxed, _last_hashes, _last_anchored), inner)
        if found is None:
            found = _tidy(inner)
        if found:
            return found
    return _first((_last_boxed, _last_hashes, _last_anchored, _last_expression), text)


def _first(finders, text: str) -> str | None:
    for find in finders:
        found = find(text)
        if found:
            return found
    return None


def _last_boxed(text: str) -> str | None:
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\b", text)]
    for m in reversed(starts):
        rest = text[m.end():]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            inner = _balanced(stripped)
            if inner is not None and inner.strip():
                return inner.strip()
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
    for m in reversed(list(_HASHES_RE.finditer(text))):
        found = _read_answer(text, m.end(), same_line=True)
        if found:
            return found
    return None


def _last_anchored(text: str) -> str | None:
    """The answer after the last announcing phrase that is followed by something answer-like."""
    for m in reversed(list(_ANCHOR_RE.finditer(text))):
        found = _read_answer(text, m.end())
        if found and _answer_like(found):
            return found
    return None


def _answer_like(s: str) -> bool:
    """A short formula or a short phrase, not a clause ("the answer is that we first ...")."""
    return len(s) <= _MAX_ANSWER_CHARS and (bool(re.search(r"[\d\\^=]", s)) or len(s.split()) <= 3)


def _read_answer(text: str, pos: int, same_line: bool = False) -> str | None:
    """The answer written at ``text[pos:]``: a math span, a bold span, else the rest of the sentence."""
    i = pos
    while i < len(text) and (text[i] in " \t*_:" or (not same_line and text[i] == "\n")):
        i += 1
    seg = math_span_at(text, i)
    if seg is not None:
        return _tidy(_final_value(seg[2]))
    rest = text[i:]
    end = _SENTENCE_END_RE.search(rest)
    piece = rest[: end.start() if end else len(rest)]
    spans = math_spans(piece)
    if len(spans) == 1:  # "x = $5$ apples", "$\frac{1}{2}$ of it": the one formula, when no number lies outside it
        a, b, content = spans[0]
        if not re.search(r"\d", piece[:a] + piece[b:]):
            return _tidy(_final_value(content))
    return _tidy(piece)


def _tidy(s: str) -> str | None:
    """Drop wrapping markup (``**``, ``$``, ``\\(\\)``) and trailing punctuation."""
    s = s.strip()
    prev = None
    while s and s != prev:
        prev = s
        s = s.strip().strip("*").strip().rstrip(".,;:!").strip()
        if len(s) > 1 and s.startswith("$") and s.endswith("$") and not s.startswith("\\$"):
            s = s.strip("$")
        for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(a) and s.endswith(b):
                s = s[len(a): -len(b)]
    return s or None


def _last_expression(text: str) -> str | None:
    """The last delimited math span or the last number (with the LaTeX it is written in), whichever ends later."""
    segs = math_spans(text)
    masked = list(text)
    for a, b, _ in segs:
        masked[a:b] = " " * (b - a)
    plain = "".join(masked)
    nums = list(_LAST_NUMBER_RE.finditer(plain))
    num_end = nums[-1].end() if nums else -1
    if segs and segs[-1][1] >= num_end:
        value = _tidy(_final_value(segs[-1][2]))
        if value:
            return value
    if not nums:
        return None
    m = nums[-1]
    lo, hi = m.start(), m.end()
    while lo > 0 and not plain[lo - 1].isspace():  # the run of LaTeX it is written in: 3\sqrt{13}, \frac{3}{56}
        lo -= 1
    while hi < len(plain) and not plain[hi].isspace():
        hi += 1
    run = plain[lo:hi]
    if "\\" in run:
        return _tidy(run)
    return m.group().replace(" ", "")


def _final_value(math: str) -> str:
    """What a math span states last: the last row of an aligned environment (``&= 7`` -> ``7``), else the span.

    Chains such as ``p(8) = \\frac{3}{56}`` stay whole: math-verify compares their final
    right-hand side with a plain answer and keeps equations (``5x + 4 = 0``) as equations.
    """
    s = math.strip()
    env = re.fullmatch(r"(?s)\\begin\{(align|eqnarray|gather|multline|split|equation)\*?\}(.*)\\end\{\1\*?\}", s)
    if env:
        rows = [r for r in re.split(r"\\\\", env.group(2)) if r.strip()]
        s = rows[-1].replace("&", " ").strip() if rows else ""
        s = s[1:] if s.startswith("=") else s
    return s.strip()


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


@functools.lru_cache(maxsize=4096)  # a gold answer is parsed once, not once per rollout; results are only read
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
