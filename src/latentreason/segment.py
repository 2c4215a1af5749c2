"""Sentence segmentation: the one splitter every stage uses, with exact character and token spans.

A sentence ends after a newline, or after ``.``, ``!``, ``?`` or ``;`` when whitespace or the
end of the text follows (so ``3.5`` does not split). Leading whitespace belongs to no sentence;
whitespace-only pieces are dropped. A newline that ends a sentence is part of it, so for the
organism each line ``S:3+4=7\\n`` is one sentence, in the order of ``strategy_labels``.

Token spans come from the tokenizer's ``offset_mapping``, never from string search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_END = re.compile(r"\n|[.!?;](?=\s|\Z)")


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
    """
    cuts = [m.end() for m in _END.finditer(text)]
    if not cuts or cuts[-1] != len(text):
        cuts.append(len(text))
    out: list[Sentence] = []
    begin = 0
    for end in cuts:
        start = begin
        while start < end and text[start].isspace():
            start += 1
        if start < end:
            out.append(Sentence(len(out), start, end, text[start:end]))
        begin = end
    return out


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
