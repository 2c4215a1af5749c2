"""The one sentence splitter and its token spans."""

from __future__ import annotations

import random

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
