"""Answer formats real models write, rendered around the real GSM8K / MATH-500 items.

Shared by ``tests/test_grading.py`` (the default tier, on a sample) and
``benchmarks/bench_grading_formats.py`` (every item, every format). Each format is a function
``render(answer, reasoning, i) -> completion | None``: ``answer`` is LaTeX (MATH-500) or a number
(GSM8K), ``reasoning`` the item's own worked solution with its final answer markers removed
(so the right answer also appears earlier in the text, as it does in real chains), ``i`` the item
index (to vary units). ``None`` means the format does not apply to that answer (thousands
separators on a 2-digit number).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")
_UNITS = ("dollars", "eggs", "meters", "hours", "cm", "apples", "minutes", "pages")


@dataclass(frozen=True)
class Item:
    """One real problem: its gold answer and its reasoning with the final answer markers removed."""

    dataset: str
    index: int
    gold: str
    reasoning: str


def load_items(root: Path = SHARED_DATA) -> list[Item]:
    """Every GSM8K and MATH-500 item of ``root`` (``gsm8k/test.jsonl``, ``math500/test.jsonl``)."""
    items: list[Item] = []
    for i, row in enumerate(_rows(root / "gsm8k" / "test.jsonl")):
        body, gold = row["answer"].rsplit("####", 1)
        body = re.sub(r"<<[^>]*>>", "", body).strip()  # calculator annotations: no model writes them
        items.append(Item("gsm8k", i, gold.strip().replace(",", ""), body))
    for i, row in enumerate(_rows(root / "math500" / "test.jsonl")):
        items.append(Item("math500", i, row["answer"].strip(), _unbox(row["solution"]).strip()))
    return items


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _unbox(text: str) -> str:
    """``\\boxed{x}`` -> ``x`` (nested braces allowed), so only the rendered answer is boxed."""
    out, pos = [], 0
    for m in re.finditer(r"\\boxed\s*\{", text):
        if m.start() < pos:
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0) if text[j - 1] != "\\" else 0
            j += 1
        out.append(text[pos : m.start()] + text[m.end() : j - 1])
        pos = j
    return "".join(out) + text[pos:]


def is_numeric(answer: str) -> bool:
    """A plain integer or decimal (``18``, ``-3``, ``0.15``)."""
    return _NUMERIC.fullmatch(answer) is not None


def math(answer: str) -> str:
    """The answer as a model writes it in running text: bare when numeric, else in ``$...$``."""
    return answer if is_numeric(answer) else f"${answer}$"


def _expression(answer: str) -> bool:
    """A single formula one can write ``y = ...`` before (not text, a list, a tuple or an equation)."""
    return not any(t in answer for t in ("\\text", ",", "\\begin", "=", "\\in", "\\cup"))


def _numeric_only(fmt: Callable[[str, str, int], str]) -> Callable[[str, str, int], str | None]:
    return lambda a, r, i: fmt(a, r, i) if is_numeric(a) else None


def _unannounced(fmt: Callable[[str, str, int], str | None]) -> Callable[[str, str, int], str | None]:
    """``fmt`` after reasoning whose own "the answer is ..." is reworded, so only the un-announced ending is read."""
    return lambda a, r, i: fmt(a, re.sub(r"(?i)\banswer\b", "result", r), i)


def _thousands(a: str) -> str | None:
    if not is_numeric(a):
        return None
    whole, _, frac = a.lstrip("-").partition(".")
    if len(whole) < 4:
        return None
    return ("-" if a.startswith("-") else "") + f"{int(whole):,}" + (f".{frac}" if frac else "")


def _dollars(a: str, r: str, i: int) -> str | None:
    if not is_numeric(a) or a.startswith("-"):
        return None
    return f"{r}\n\nShe pays $4 for the first one and ends up with ${a} in total. The answer is ${a}."


FORMATS: dict[str, Callable[[str, str, int], str | None]] = {
    # the two formats the graders of reference datasets write
    "boxed": lambda a, r, i: f"{r}\n\nThe final answer is $\\boxed{{{a}}}$.",
    "hashes": lambda a, r, i: f"{r}\n#### {a}",
    # instruct models (SmolLM2, Llama-3 chat): bold, markdown headings, "The final answer is:"
    "answer_is_bold": lambda a, r, i: f"{r}\n\nThe answer is **{math(a)}**.",
    "markdown_heading": lambda a, r, i: f"{r}\n\n### Final Answer\n\n{math(a)}",
    "bold_answer_label": lambda a, r, i: f"{r}\n\n**Answer:** {math(a)}",
    "llama_steps": lambda a, r, i: f"## Step 1: Work it out\n{r}\n\n## Step 2: Conclude\nThe final answer is: $\\boxed{{{a}}}$",
    # Minerva-prompted models
    "minerva": lambda a, r, i: f"{r}\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    # base models after "Question: ...\nAnswer:" (and running on into the next question)
    "answer_colon": lambda a, r, i: f"{r}\nAnswer: {math(a)}",
    "answer_then_next_question": lambda a, r, i: f"{r}\nThe answer is {math(a)}.\n\nQuestion: A farmer has 12 cows and buys 7 more. How many cows?\nAnswer: 12 + 7 = 19. The answer is 19.",
    # R1-style and RL-tuned models
    "r1_boxed": lambda a, r, i: f"<think>\n{r}\nWait, let me double-check that. Yes, it holds.\n</think>\n\nWorking through it gives the result.\n\n**Final Answer**\n\\[\n\\boxed{{{a}}}\n\\]",
    "r1_plain": lambda a, r, i: f"<think>\n{r}\nSo that should be it.\n</think>\n\nThe answer is {math(a)}.",
    "answer_tags": lambda a, r, i: f"<think> {r} </think> <answer> {a} </answer>",
    "multiple_boxed_last_wins": lambda a, r, i: f"A first guess is $\\boxed{{1000003}}$, but that ignores a step.\n{r}\nSo the answer is $\\boxed{{{a}}}$.",
    # un-boxed LaTeX at the end: the last-number fallback must not take trailing digits
    # (the reasoning's own "the answer is ..." reworded: an announced answer rightly wins over them)
    "latex_inline": _unannounced(lambda a, r, i: f"{r}\n\nTherefore, we get ${a}$."),
    "latex_display": _unannounced(lambda a, r, i: f"{r}\n\nPutting it together,\n\\[\n{a}.\n\\]"),
    "latex_equation": _unannounced(lambda a, r, i: f"{r}\n\nSo the value we want is $y = {a}$." if _expression(a) else None),
    # plain numbers dressed up
    "units": _numeric_only(lambda a, r, i: f"{r}\nThe answer is {a} {_UNITS[i % len(_UNITS)]}."),
    "text_units": _numeric_only(lambda a, r, i: f"{r}\nSo the total is $\\boxed{{{a}\\text{{ {_UNITS[i % len(_UNITS)]}}}}}$."),
    "trailing_punctuation": _numeric_only(lambda a, r, i: f"{r}\nThe answer is: {a}!"),
    "thousands": lambda a, r, i: None if _thousands(a) is None else f"{r}\nThe answer is {_thousands(a)}.",
    "dollars": _dollars,
    "percent": _numeric_only(lambda a, r, i: f"{r}\nThe answer is {a}%."),
    "x_equals": _unannounced(_numeric_only(lambda a, r, i: f"{r}\nSolving, x = {a}.")),
    "answer_is_x_equals": _numeric_only(lambda a, r, i: f"{r}\nSo the answer is $x = {a}$."),
}


def wrong_answers(items: list[Item], k: int) -> list[str]:
    """Wrong answers for item ``k``: gold + 1 where the gold is numeric, and the next item's gold
    (within the same dataset) whose text differs."""
    it = items[k]
    out: list[str] = []
    if is_numeric(it.gold):
        v = float(it.gold) + 1
        out.append(str(int(v)) if "." not in it.gold else f"{v:.{len(it.gold.split('.')[1])}f}")
    same = [x for x in items if x.dataset == it.dataset]
    pos = same.index(it)
    for step in range(1, len(same)):
        other = same[(pos + step) % len(same)].gold
        if _loose(other) != _loose(it.gold):
            out.append(other)
            break
    return out


def _loose(s: str) -> str:
    """Text form for telling two gold answers apart: ``x=5`` and ``5``, ``\\dfrac12`` and ``\\frac12`` are the same."""
    s = re.sub(r"\s|\\!|\\,|\\left|\\right", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").lower()
    return re.sub(r"^[a-z]=", "", s)


@dataclass
class FormatResult:
    """One format graded on some items: how many right answers were accepted, wrong ones rejected."""

    n: int = 0
    right: int = 0
    n_wrong: int = 0
    rejected: int = 0
    graded_wrong: list[dict] = field(default_factory=list)  # right answers graded wrong
    accepted: list[dict] = field(default_factory=list)  # wrong answers graded right


def check_format(items: list[Item], fmt: str, picked: Iterable[int], grade: Callable[[str, str], bool]) -> FormatResult:
    """Render each picked item's gold and its :func:`wrong_answers` in format ``fmt`` and grade them."""
    render, res = FORMATS[fmt], FormatResult()
    for k in picked:
        it = items[k]
        text = render(it.gold, it.reasoning, it.index)
        if text is None:
            continue
        res.n += 1
        if grade(text, it.gold):
            res.right += 1
        else:
            res.graded_wrong.append({"dataset": it.dataset, "index": it.index, "gold": it.gold, "tail": text[-160:]})
        for w in wrong_answers(items, k):
            wtext = render(w, it.reasoning, it.index)
            if wtext is None:
                continue
            res.n_wrong += 1
            if grade(wtext, it.gold):
                res.accepted.append({"dataset": it.dataset, "index": it.index, "gold": it.gold, "wrong": w, "tail": wtext[-160:]})
            else:
                res.rejected += 1
    return res
