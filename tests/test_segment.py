"""The one sentence splitter and its token spans."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from latentreason.segment import Sentence, sentence_records, split_sentences, token_spans
from latentreason.tasks.arith import ArithTask, strategy_labels


def texts(sents):
    return [s.text for s in sents]


def test_split_ends_sentences_after_newlines_and_keeps_the_newline():
    assert texts(split_sentences("S:3+4=7\nC:3+4=7 ok\nA:7\n")) == ["S:3+4=7\n", "C:3+4=7 ok\n", "A:7\n"]


def test_split_ends_after_punctuation_followed_by_whitespace_or_end():
    assert texts(split_sentences("First. Second! Third? Fourth; fifth.")) == ["First.", "Second!", "Third?", "Fourth;", "fifth."]


def test_split_does_not_split_decimals_or_punctuation_inside_tokens():
    assert texts(split_sentences("It is 3.5 or e.g.x; done")) == ["It is 3.5 or e.g.x;", "done"]


def test_split_drops_leading_whitespace_and_empty_pieces():
    sents = split_sentences("  \n\n  Hello.   \n  World  ")
    assert texts(sents) == ["Hello.", "World  "]
    assert [s.index for s in sents] == [0, 1]


def test_split_of_empty_or_blank_text_is_empty():
    assert split_sentences("") == []
    assert split_sentences(" \n \t\n") == []


def test_split_spans_index_the_text_exactly():
    rng = random.Random(0)
    alphabet = "ab 3.5!?;\n\t"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        sents = split_sentences(text)
        prev = 0
        for i, s in enumerate(sents):
            assert s.index == i and text[s.start : s.end] == s.text
            assert s.start >= prev and s.text.strip() and not s.text[0].isspace()
            prev = s.end
        # everything outside the sentences is whitespace
        covered = set().union(*(range(s.start, s.end) for s in sents)) if sents else set()
        assert all(text[i].isspace() for i in range(len(text)) if i not in covered)


def test_organism_lines_map_one_to_one_to_strategy_labels():
    task = ArithTask()
    from latentreason.organism.corpus import CorpusConfig, make_corpus

    for ex in make_corpus(task, 50, CorpusConfig(worked_fraction=1.0, switch_continue=1.0), seed=1):
        sents = split_sentences(ex.completion)
        assert [s.text.rstrip("\n") for s in sents] == list(ex.sentences)
        assert strategy_labels(ex.completion) == list(ex.labels)
        assert len(sents) == len(strategy_labels(ex.completion))


def test_token_spans_follow_the_char_tokenizer_offsets():
    from latentreason.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    text = "S:3+4=7\nA:7\n"
    enc = tok(text, return_offsets_mapping=True)  # BOS first, zero-width
    spans = token_spans(enc["offset_mapping"], split_sentences(text))
    assert spans == [(1, 9), (9, 13)]
    assert [tok.decode(enc["input_ids"][a:b]) for a, b in spans] == ["S:3+4=7\n", "A:7\n"]


def test_token_spans_shift_by_char_offset_when_the_text_has_a_prefix():
    from latentreason.organism.tokenizer import build_tokenizer

    tok = build_tokenizer()
    prompt, completion = "  3+4=", "S:3+4=7\nA:7\n"
    enc = tok(prompt + completion, return_offsets_mapping=True)
    spans = token_spans(enc["offset_mapping"], split_sentences(completion), char_offset=len(prompt))
    assert [tok.decode(enc["input_ids"][a:b]) for a, b in spans] == ["S:3+4=7\n", "A:7\n"]


def test_token_spans_give_straddling_tokens_to_both_sentences():
    sents = split_sentences("ab.\ncd")  # "ab." "cd"
    # one merged token ".\n" straddles the boundary; whitespace token belongs to neither
    offsets = [(0, 2), (2, 4), (4, 6)]
    assert token_spans(offsets, sents) == [(0, 2), (2, 3)]


def test_token_spans_refuse_offsets_that_do_not_reach_a_sentence():
    with pytest.raises(ValueError, match="covers no token"):
        token_spans([(0, 1)], [Sentence(0, 5, 8, "abc")])


def test_sentence_records_carry_one_label_per_sentence():
    recs = sentence_records("S:1+2=3\nA:3\n", ["step", "answer"])
    assert [(r["text"], r["label"]) for r in recs] == [("S:1+2=3\n", "step"), ("A:3\n", "answer")]
    with pytest.raises(ValueError, match="one label per sentence"):
        sentence_records("A:3\n", ["step", "answer"])


# ------------------------------------------------------------------ real text

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
_ONLY_MARKER = re.compile(r"\(?(?:\d{1,3}|[A-Za-z])[.)]|[-*+]|#{1,6}|(?:Step|Part|Case)\s*\d+\s*[.:)]?")
_ONLY_PUNCT = re.compile(r"[\s{}()\[\]$.,;:!?\\&|*=-]*")
_ABBREVIATION_END = re.compile(r"(?:^|[\s(])(?:Mr|Mrs|Ms|Dr|Prof|St|vs|e\.g|i\.e|cf|approx)\.$")


def bad_sentences(text: str) -> list[tuple[str, str]]:
    """(problem, sentence) for sentences that are only a list marker, only braces/punctuation or cut after an abbreviation."""
    out = []
    for s in split_sentences(text):
        t = s.text.strip()
        if _ONLY_MARKER.fullmatch(t):
            out.append(("list marker", t))
        elif _ONLY_PUNCT.fullmatch(t):
            out.append(("lone brace or punctuation", t))
        elif _ABBREVIATION_END.search(t):
            out.append(("abbreviation", t))
    return out


def assert_exact_spans(text: str) -> None:
    sents = split_sentences(text)
    prev = 0
    for i, s in enumerate(sents):
        assert s.index == i and text[s.start : s.end] == s.text and s.start >= prev and not s.text[0].isspace()
        prev = s.end
    gaps = [text[a.end : b.start] for a, b in zip(sents, sents[1:])] + ([text[: sents[0].start], text[sents[-1].end :]] if sents else [text])
    assert all(not g.strip() for g in gaps)


@pytest.fixture(scope="module")
def gold_solutions() -> dict[str, list[str]]:
    """Every worked solution of the real GSM8K and MATH-500 files in ``shared/data``."""
    g, m = SHARED_DATA / "gsm8k" / "test.jsonl", SHARED_DATA / "math500" / "test.jsonl"
    if not g.exists() or not m.exists():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA} (expected gsm8k/test.jsonl and math500/test.jsonl)")
    read = lambda p, k: [json.loads(line)[k] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]  # noqa: E731
    return {"gsm8k": read(g, "answer"), "math500": read(m, "solution")}


def test_gold_solutions_split_into_real_sentences_with_exact_spans(gold_solutions):
    assert len(gold_solutions["gsm8k"]) == 1319 and len(gold_solutions["math500"]) == 500
    bad = []
    for name, texts in gold_solutions.items():
        for i, text in enumerate(texts):
            assert_exact_spans(text)
            bad += [(name, i, kind, t[:60]) for kind, t in bad_sentences(text)]
    assert bad == []


def test_gold_solutions_keep_names_after_titles_and_formulas_whole(gold_solutions):
    texts = gold_solutions["gsm8k"] + gold_solutions["math500"]
    sents = [s.text for t in texts for s in split_sentences(t)]
    assert sum("Mr. " in s or "Mrs. " in s for s in sents) >= 20  # the titles stay inside their sentences
    for s in sents:  # no formula is cut open
        assert s.count("\\begin{") == s.count("\\end{"), s[:80]
        assert s.count("[asy]") == s.count("[/asy]"), s[:80]


def test_smollm2_chains_split_without_list_marker_sentences():
    rows = [json.loads(line) for line in (FIXTURES / "smollm2_chains.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 9
    sents = [s for r in rows for s in split_sentences(r["completion"])]
    for r in rows:
        assert_exact_spans(r["completion"])
        assert bad_sentences(r["completion"]) == []
    numbered = [s.text for s in sents if re.match(r"\d+\. \S", s.text)]
    assert len(numbered) >= 20  # "1. First, we need ..." is one sentence: the marker with its item


def test_list_markers_and_numbered_steps_attach_to_their_item():
    text = "Steps:\n1. Add 3 and 4.\n2.\nDouble it.\n- Check it.\nStep 3. Report 14.\n### Step 4\nDone."
    assert texts(split_sentences(text)) == ["Steps:\n", "1. Add 3 and 4.", "2.\nDouble it.", "- Check it.", "Step 3. Report 14.", "### Step 4\nDone."]


def test_abbreviations_do_not_end_sentences_but_etc_before_a_capital_does():
    text = "Mr. Li and Dr. Wu met, i.e. they talked, e.g. about math vs. art. Pens, pencils etc. Then they left at 5 p.m. sharp."
    assert texts(split_sentences(text)) == [
        "Mr. Li and Dr. Wu met, i.e. they talked, e.g. about math vs. art.",
        "Pens, pencils etc.",
        "Then they left at 5 p.m. sharp.",
    ]


def test_latex_is_never_split_inside_and_leaves_no_lone_braces():
    text = "We get $x = 3.5. Then$ more.\n\\[\n\\frac{1}{2}. \\text{so}\n\\]\nand \\begin{align*}\na &= 1. \\\\\nb &= 2.\n\\end{align*}Next one.\n}\n"
    got = texts(split_sentences(text))
    assert got == ["We get $x = 3.5. Then$ more.", "\\[\n\\frac{1}{2}. \\text{so}\n\\]\n", "and \\begin{align*}\na &= 1. \\\\\nb &= 2.\n\\end{align*}", "Next one.\n}\n"]


def test_a_line_break_before_display_math_continues_the_sentence():
    assert texts(split_sentences("Let\n\\[S = 1 + 2.\\]Then\n$$T = 3.$$")) == ["Let\n\\[S = 1 + 2.\\]", "Then\n$$T = 3.$$"]


def test_currency_dollars_are_not_math_delimiters():
    from latentreason.segment import math_spans

    assert math_spans("She pays $5 and gets $3. Then $x$ is 2.") == [(30, 33, "x")]
    assert texts(split_sentences("She pays $5 and gets $3. Then she has $8.")) == ["She pays $5 and gets $3.", "Then she has $8."]


def test_figures_and_code_blocks_are_one_sentence():
    text = "See the figure.\n[asy]\ndraw((0,0)--(1,1));\nfor(i=0;i<3;++i)\n{\ndot((i,0));\n}\n[/asy]\nSo it is 3.\n```\nx = 1;\ny = 2;\n```\n"
    assert texts(split_sentences(text)) == ["See the figure.", "[asy]\ndraw((0,0)--(1,1));\nfor(i=0;i<3;++i)\n{\ndot((i,0));\n}\n[/asy]\n", "So it is 3.", "```\nx = 1;\ny = 2;\n```\n"]
