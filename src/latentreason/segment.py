"""Sentence segmentation: the one splitter every stage uses, with exact character and token spans.

A sentence ends after a newline, or after ``.``, ``!``, ``?`` or ``;`` when whitespace or the
end of the text follows (so ``3.5`` does not split). A newline that ends a sentence is part of
it, so for the organism each line ``S:3+4=7\\n`` is one sentence, in the order of
``strategy_labels``. Leading whitespace belongs to no sentence; whitespace-only pieces are
dropped. Real text needs four refinements, applied to those cuts:

* **math and figures are never cut inside**: ``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``,
  ``\\begin{env}...\\end{env}`` (see :func:`math_spans`), ``[asy]...[/asy]`` and fenced code blocks;
* **abbreviations do not end a sentence**: ``Mr.``, ``Mrs.``, ``Dr.``, ``e.g.``, ``i.e.``, ``vs.``
  and others always join; ``etc.``, ``a.m.``, ``p.m.`` join unless a capitalised word follows;
* **list markers and step labels attach to their item**: ``1.``, ``2)``, ``a.``, ``-``, ``Step 3:``,
  ``### Step 2`` on their own start the following sentence instead of being one;
* **no sentence is only punctuation or braces** (a lone ``}`` or ``$$``): such a piece joins the
  sentence before it (the one after it, at the very start).

Token spans come from the tokenizer's ``offset_mapping``, never from string search.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_END = re.compile(r"\n|(?<!\\)[.!?;](?=\s|\Z)")  # not LaTeX spacing such as "\!" or "\;"
_BLOCKS = re.compile(r"(?s)\[asy\].*?(?:\[/asy\]|\Z)|```.*?(?:```|\Z)")
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr mt vs e.g i.e cf viz approx fig eq resp".split())
_ABBREVIATIONS_UNLESS_CAPITAL = frozenset("etc a.m p.m inc ltd".split())
_MARKER_ONLY = re.compile(
    r"(?:[-*+\u2022]|\(?\d{1,3}[.)]|\(?[A-Za-z][.)]|\(?[ivxIVX]{1,4}[.)]|#{1,6}"
    r"|(?:#{1,6}[ \t]*)?(?:\*\*|__)?(?:Step|Part|Case)[ \t]*\d+[ \t]*[.:)]?[ \t]*(?:\*\*|__)?[ \t]*:?)\s*"
)
_DISPLAY_OPENERS = ("\\[", "$$", "\\begin{")
_PUNCT_ONLY = re.compile(r"[\s{}()\[\]$.,;:!?\\&|*=-]*")


@dataclass(frozen=True)
class Sentence:
    """One sentence of a text: ``text == full_text[start:end]`` (``end`` exclusive)."""

    index: int
    start: int
    end: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences with character spans.

    Example:
        >>> [s.text for s in split_sentences("S:3+4=7\\nA:7\\n")]
        ['S:3+4=7\\n', 'A:7\\n']
        >>> [(s.start, s.end) for s in split_sentences("It is 3.5.  Done")]
        [(0, 10), (12, 16)]
        >>> [s.text for s in split_sentences("1. Mr. Li pays $3.50, i.e. $x = 3.5$. 2. Done.")]
        ['1. Mr. Li pays $3.50, i.e. $x = 3.5$.', '2. Done.']
    """
    blocks = [(m.start(), m.end()) for m in _BLOCKS.finditer(text)]  # figures and code: never cut inside
    maths = [sp for sp in math_spans(text) if not _inside(blocks, sp[0])]
    protected = sorted(blocks + [(a, b) for a, b, _ in maths])
    cuts = {m.end() for m in _END.finditer(text) if not _inside(protected, m.start()) and not _abbreviation_at(text, m) and not _leads_into_display(text, m)}
    cuts = sorted(cuts | set(_math_sentence_ends(text, maths)))
    if not cuts or cuts[-1] != len(text):
        cuts.append(len(text))
    pieces: list[tuple[int, int]] = []
    begin = 0
    for end in cuts:
        start = begin
        while start < end and text[start].isspace():
            start += 1
        if start < end:
            pieces.append((start, end))
        begin = end
    pieces = _attach_fragments(text, pieces)
    return [Sentence(i, a, b, text[a:b]) for i, (a, b) in enumerate(pieces)]


def _attach_fragments(text: str, pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join list markers to the item after them and lone punctuation/braces to the sentence before."""
    out: list[tuple[int, int]] = []
    pending: int | None = None  # start of marker pieces waiting for their item
    for a, b in pieces:
        piece = text[a:b]
        if _MARKER_ONLY.fullmatch(piece):
            pending = a if pending is None else pending
            continue
        if pending is not None:
            out.append((pending, b))
            pending = None
        elif _PUNCT_ONLY.fullmatch(piece) and out:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    if pending is not None:  # markers with no item after them
        if out:
            out[-1] = (out[-1][0], pieces[-1][1])
        else:
            out.append((pending, pieces[-1][1]))
    # a punctuation-only first sentence joins the next one
    if len(out) > 1 and _PUNCT_ONLY.fullmatch(text[out[0][0]:out[0][1]]):
        out[:2] = [(out[0][0], out[1][1])]
    return out


def _abbreviation_at(text: str, m: re.Match) -> bool:
    """Whether the ``.`` matched by ``m`` ends an abbreviation rather than a sentence."""
    dot = m.start()
    if text[dot] != ".":
        return False
    k = dot
    while k > 0 and dot - k < 12 and (text[k - 1].isalpha() or text[k - 1] == "."):
        k -= 1
    if k > 0 and text[k - 1].isalnum():
        return False
    word = text[k:dot].lower()
    if word in _ABBREVIATIONS:
        return True
    if word in _ABBREVIATIONS_UNLESS_CAPITAL:
        after = text[m.end():].lstrip(" \t")
        return not (after[:1].isupper() or after[:1] in ("\n", ""))
    return False


def _leads_into_display(text: str, m: re.Match) -> bool:
    """Whether the newline matched by ``m`` only breaks the line before a display formula that continues the sentence ("we get\\n\\[...\\]")."""
    if text[m.start()] != "\n":
        return False
    rest = text[m.end():].lstrip()
    if not rest.startswith(_DISPLAY_OPENERS):
        return False
    before = text[: m.start()].rstrip()
    return bool(before) and before[-1] not in ".!?;\n"


def _math_sentence_ends(text: str, spans: list[tuple[int, int, str]]) -> list[int]:
    """Ends of math ``spans`` whose content closes a sentence (``\\[x = 5.\\]So``, ``$y = 0.$ Also``)."""
    out = []
    for a, b, content in spans:
        display = text.startswith(_DISPLAY_OPENERS, a)
        inner = content[: content.rfind("\\end{")] if content.startswith("\\begin{") else content
        if inner.rstrip()[-1:] in (".", "!", "?") and (display or b == len(text) or text[b].isspace()):
            out.append(b)
    return out


def _inside(spans: list[tuple[int, int]], pos: int) -> bool:
    """Whether position ``pos`` lies inside one of the sorted, disjoint ``spans`` (a cut after it would split the span)."""
    k = bisect.bisect_right(spans, (pos, float("inf"))) - 1
    return k >= 0 and spans[k][0] <= pos < spans[k][1] - 1


# ------------------------------------------------------------------ math spans


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """Every top-level math span of ``text`` as ``(start, end, content)``, in order.

    Delimiters: ``$$...$$``, ``\\[...\\]``, ``\\(...\\)``, ``\\begin{env}...\\end{env}`` (content is the
    whole environment) and ``$...$`` under pandoc's rule: the opening ``$`` is followed by a
    non-space, the closing one preceded by a non-space and not followed by a digit, with no
    blank line between; a ``$`` that cannot close makes the opening one a currency sign, so
    ``$5 and $6`` holds no math. ``\\$`` is never a delimiter.

    Example:
        >>> [c for _, _, c in math_spans("pay $5 and $6, so $x = \\\\frac{1}{2}$ and \\\\[y\\\\]")]
        ['x = \\\\frac{1}{2}', 'y']
    """
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("\\\\", i) or text.startswith("\\$", i):
            i += 2
            continue
        if text[i] in "$\\":
            span = math_span_at(text, i)
            if span is not None:
                out.append(span)
                i = span[1]
                continue
        i += 1
    return out


def math_span_at(text: str, i: int) -> tuple[int, int, str] | None:
    """The math span ``(start, end, content)`` that opens exactly at ``text[i]``, or None (see :func:`math_spans`)."""
    if text.startswith("$$", i):
        j = text.find("$$", i + 2)
        return (i, j + 2, text[i + 2 : j]) if j > i + 2 else None
    if text.startswith("$", i):
        j = _inline_close(text, i)
        return (i, j + 1, text[i + 1 : j]) if j is not None else None
    for a, b in (("\\[", "\\]"), ("\\(", "\\)")):
        if text.startswith(a, i):
            j = text.find(b, i + 2)
            return (i, j + 2, text[i + 2 : j]) if j >= 0 else None
    m = re.match(r"\\begin\{([^{}]+)\}", text[i : i + 80])
    if m:
        depth = 0
        for e in re.finditer(rf"\\(begin|end)\{{{re.escape(m.group(1))}\}}", text[i:]):
            depth += 1 if e.group(1) == "begin" else -1
            if depth == 0:
                return (i, i + e.end(), text[i : i + e.end()])
    return None


def _inline_close(text: str, i: int) -> int | None:
    """Index of the ``$`` closing the inline math opened at ``text[i]``; None when that ``$`` is currency."""
    n = len(text)
    if i + 1 >= n or text[i + 1].isspace():
        return None
    j = i + 1
    while j < n:
        ch = text[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "\n" and text[j + 1 : j + 2] == "\n":
            return None
        if ch == "$":
            if not text[j - 1].isspace() and not text[j + 1 : j + 2].isdigit():
                return j
            return None  # "$5 and $6": a currency sign, not a closing delimiter
        j += 1
    return None


def token_spans(offsets: Sequence[Sequence[int]], sentences: Sequence[Sentence], char_offset: int = 0) -> list[tuple[int, int]]:
    """Token span ``(first, last + 1)`` of each sentence: the tokens whose characters overlap it.

    Args:
        offsets: the tokenizer's ``offset_mapping`` for the tokenized text, one ``(start, end)``
            per token; zero-width entries (special tokens such as BOS) never match.
        sentences: sentences of a substring that starts at ``char_offset`` of the tokenized text.

    A token that straddles two sentences (possible with merged BPE tokens) belongs to both.

    Example:
        >>> token_spans([(0, 0), (0, 1), (1, 2), (2, 3)], split_sentences("a\\nb"))
        [(1, 3), (3, 4)]
    """
    spans: list[tuple[int, int]] = []
    n = len(offsets)
    t = 0
    for s in sentences:
        lo, hi = s.start + char_offset, s.end + char_offset
        while t < n and (offsets[t][1] <= lo or offsets[t][0] == offsets[t][1]):  # tokens wholly before the sentence
            t += 1
        first = t
        last = first
        while last < n and offsets[last][0] < hi:
            last += 1
        # drop zero-width tokens at the edges (specials never belong to a sentence)
        while last > first and offsets[last - 1][0] == offsets[last - 1][1]:
            last -= 1
        if last <= first:
            raise ValueError(
                f"Sentence {s.index} (chars {lo}-{hi}, {s.text[:40]!r}) covers no token: the offsets do not reach it. "
                "Tokenize the same text the sentences were split from (pass char_offset when they start later in it)."
            )
        spans.append((first, last))
        t = first  # the next sentence may share a straddling token
    return spans


def sentence_records(text: str, labels: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """``split_sentences`` as JSON records ``{index, start, end, text, label}``."""
    sents = split_sentences(text)
    if labels is not None and len(labels) != len(sents):
        raise ValueError(f"Got {len(labels)} labels for {len(sents)} sentences; give one label per sentence.")
    return [{**s.to_dict(), "label": None if labels is None else labels[i]} for i, s in enumerate(sents)]


def sentences_from_records(records: Sequence[dict[str, Any]]) -> list[Sentence]:
    """Rebuild :class:`Sentence` values from JSON records (extra keys such as ``label`` ignored)."""
    return [Sentence(int(r["index"]), int(r["start"]), int(r["end"]), str(r["text"])) for r in records]
