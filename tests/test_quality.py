"""Reasoning-quality measures: definitions on hand-made completions and scorers, the organism acceptance test, the CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from latentreason.quality import (
    ANSWER_PROBES,
    FRACTIONS,
    AnswerProbe,
    Scorer,
    answer_probe,
    build_generators,
    check_fractions,
    cut_index,
    generator_completions,
    hybrid_examples,
    quality_report,
    score_completions,
    split_chain,
    summarise,
    write_quality,
)
from latentreason.tasks.arith import ArithTask, Problem

ARITH = ANSWER_PROBES["arith"]
SURE = 10.0  # logit margin of the hand-made scorers


@pytest.fixture(scope="module")
def tok():
    from latentreason.organism.tokenizer import build_tokenizer

    return build_tokenizer()


class DigitScorer(torch.nn.Module):
    """Hand-made scorer over the organism's characters: at each position, the last (or first) digit seen so far wins by ``SURE``."""

    def __init__(self, tok, which: str = "last") -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.digit_ids = torch.tensor([tok.convert_tokens_to_ids(str(d)) for d in range(10)])
        self.vocab, self.which = len(tok), which

    def forward(self, input_ids, attention_mask=None, position_ids=None, **_):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        for i in range(b):
            seen = None
            for j in range(t):
                tid = int(input_ids[i, j])
                if tid in self.digit_ids.tolist() and (self.which == "last" or seen is None):
                    seen = tid
                if seen is not None:
                    logits[i, j, seen] = SURE
        return SimpleNamespace(logits=logits, past_key_values=None)


def _logp_hit(vocab: int) -> float:
    return SURE - math.log(math.exp(SURE) + vocab - 1)


def _logp_miss(vocab: int) -> float:
    return -math.log(math.exp(SURE) + vocab - 1)


# ---------------------------------------------------------------- chains and definitions


def test_split_chain_separates_reasoning_from_the_final_answer_sentence():
    c = split_chain("S:   3+4=7*2\nC:y 3+4=7*2\nS:     7*2=4\nA:4\n", ARITH)
    assert c.reasoning == ("S:   3+4=7*2\n", "C:y 3+4=7*2\n", "S:     7*2=4\n")
    assert c.answer_sentence == "A:4\n"
    assert [c.prefix(k) for k in range(c.n + 1)] == ["", "S:   3+4=7*2\n", "S:   3+4=7*2\nC:y 3+4=7*2\n", "S:   3+4=7*2\nC:y 3+4=7*2\nS:     7*2=4\n"]


def test_a_direct_answer_has_no_reasoning_and_a_missing_answer_leaves_all_reasoning():
    assert split_chain("A:7\n", ARITH).n == 0
    c = split_chain("S: 3+4=7\nS: 7*2=4\n", ARITH)
    assert c.n == 2 and c.answer_sentence is None and c.prefix(2) == "S: 3+4=7\nS: 7*2=4\n"


def test_filler_keeps_length_and_line_structure():
    c = split_chain("S: 3+4=7\nS: 7*2=4\nA:4\n", ARITH)
    assert c.filler(".") == "........\n........\n"


def test_cut_index_rounds_half_up():
    assert [cut_index(f, 3) for f in FRACTIONS] == [0, 1, 1, 2, 2, 3]
    assert [cut_index(f, 1) for f in FRACTIONS] == [0, 0, 0, 1, 1, 1]


def test_fractions_must_run_from_zero_to_one():
    assert check_fractions([0, 0.5, 1]) == (0.0, 0.5, 1.0)
    for bad in ([0.2, 1], [0, 0.5], [0, 0.6, 0.4, 1], [0]):
        with pytest.raises(ValueError, match="must increase strictly from 0 to 1"):
            check_fractions(bad)


def test_answer_probe_comes_from_the_task_or_the_registry():
    assert answer_probe(ArithTask()) is ARITH
    own = AnswerProbe("\nSo:", "So:")
    assert answer_probe(SimpleNamespace(name="mine", answer_probe=own)) is own
    with pytest.raises(ValueError, match="no answer marker.*answer_probe"):
        answer_probe(SimpleNamespace(name="mine"))
    with pytest.raises(ValueError, match="non-empty marker"):
        AnswerProbe("", "A:")


# ---------------------------------------------------------------- measures with hand-made scorers

P = Problem((3, 4, 2), ("+", "*"))  # (3+4)*2 = 14 -> 4
CHAIN = "S:   3+4=7*2\nS:     7*2=4\nA:4\n"  # the chain carries the answer
UNRELATED = "S:   1+1=2*2\nS:     2*2=8\nA:4\n"  # the chain ends in 8, the answer 4 does not follow from it


def test_a_chain_reading_scorer_depends_on_a_carrying_chain(tok):
    sc = Scorer(DigitScorer(tok, "last"), tok, ARITH)
    rec = score_completions(sc, ArithTask(), [(P, CHAIN)])[0]
    # the prompt "  3+4*2=" ends in digit 2, the first step in 2 as well ("7*2"), the full chain in 4
    assert rec["forced"] == [2, 2, 4]
    assert rec["early"] == [False, False, False, False, True, True]  # cuts after 0, 0, 1, 1, 2, 2 sentences
    assert rec["filler_correct"] is False  # filler: the last digit read is the prompt's 2
    v = len(tok)
    assert rec["logp"] == pytest.approx([_logp_miss(v), _logp_miss(v), _logp_hit(v)], abs=1e-4)
    s = summarise([rec])
    assert s["info_gain"]["total"] == pytest.approx(SURE, abs=1e-4)
    assert s["info_gain"]["per_step"] == pytest.approx(SURE / 2, abs=1e-4)
    assert s["info_gain"]["by_label"]["step"]["n"] == 2  # both hand-written lines are marked S:
    assert s["early_answering"]["auc"] == pytest.approx(0.3)  # trapezoid of [0,0,0,0,1,1] over 0..1 by 0.2
    assert s["early_answering"]["aoc"] == pytest.approx(0.7)


def test_an_answer_independent_of_the_chain_is_not_changed_by_cutting_it(tok):
    sc = Scorer(DigitScorer(tok, "first"), tok, ARITH)
    recs = score_completions(sc, ArithTask(), [(Problem((4, 1), ("*",)), "S:   4*1=4\nA:4\n"), (P, UNRELATED)])
    first = recs[0]  # the scorer answers the prompt's first digit, 4, whatever the chain
    assert first["early"] == [True] * 6 and first["forced"] == [4, 4]
    s = summarise(recs[:1])
    assert s["early_answering"]["aoc"] == pytest.approx(0.0)
    assert s["info_gain"]["total"] == pytest.approx(0.0, abs=1e-6)
    assert s["filler"]["acc"] == 1.0 and s["filler"]["no_chain_acc"] == 1.0


def test_a_chain_reader_disagrees_with_an_answer_the_chain_does_not_support(tok):
    sc = Scorer(DigitScorer(tok, "last"), tok, ARITH)
    rec = score_completions(sc, ArithTask(), [(P, UNRELATED)])[0]
    assert rec["forced"][-1] == 8 and rec["early"][-1] is False  # full chain says 8, the completion says 4
    assert rec["correct"] is True


def test_direct_answers_and_answerless_chains_are_reported_apart(tok):
    sc = Scorer(DigitScorer(tok, "last"), tok, ARITH)
    recs = score_completions(sc, ArithTask(), [(P, "A:2\n"), (P, "A:5\n"), (P, "S:   3+4=7*2\n"), (P, CHAIN)])
    s = summarise(recs)
    ea = s["early_answering"]
    assert ea["n"] == 1 and ea["no_answer"] == 1
    assert ea["direct"]["n"] == 2 and ea["direct"]["agreement"] == 0.5  # the scorer says 2 after the prompt
    assert s["reasoning_rate"] == 0.5 and s["no_answer_sentence"] == 1
    assert s["filler"]["n"] == 2 and s["info_gain"]["n"] == 2
    assert (s["filler"]["modal_answer"], s["filler"]["modal_share"]) == (2, 1.0)  # after filler the chain reader sees only the prompt


def test_summaries_of_nothing_are_none_not_nan(tok):
    sc = Scorer(DigitScorer(tok), tok, ARITH)
    s = summarise(score_completions(sc, ArithTask(), [(P, "A:4\n")]))
    assert s["early_answering"]["aoc"] is None and s["filler"]["acc"] is None and s["info_gain"]["per_step"] is None
    json.dumps(s, allow_nan=False)


def test_free_decoding_probe_reads_answers_without_choices(tok):
    probe = AnswerProbe("A:", "A:", choices=None, max_tokens=1)
    sc = Scorer(DigitScorer(tok, "last"), tok, probe)
    rec = score_completions(sc, ArithTask(), [(P, CHAIN)])[0]
    assert rec["forced"] == [2, 2, 4]


def test_bad_inputs_raise_with_the_fix(tok):
    sc = Scorer(DigitScorer(tok), tok, ARITH)
    with pytest.raises(ValueError, match=r"item 0: expected a \(problem, completion: str\) pair"):
        score_completions(sc, ArithTask(), [(P, 3)])
    with pytest.raises(ValueError, match="no completions"):
        score_completions(sc, ArithTask(), [])
    with pytest.raises(ValueError, match="cannot represent filler"):
        score_completions(sc, ArithTask(), [(P, CHAIN)], filler="#")
    with pytest.raises(ValueError, match="one character"):
        score_completions(sc, ArithTask(), [(P, CHAIN)], filler="..")
    with pytest.raises(ValueError, match="batch_size"):
        Scorer(DigitScorer(tok), tok, ARITH, batch_size=0)
    with pytest.raises(ValueError, match="not single tokens"):
        Scorer(DigitScorer(tok), tok, AnswerProbe("A:", "A:", choices=("10",)))


# ---------------------------------------------------------------- the organism


@pytest.fixture(scope="module")
def problems(organism):
    from latentreason.rollouts import task_for_pair

    task = task_for_pair(organism)
    return task, task.sample("test", 40, seed=0)


def test_forced_reasoning_answers_depend_on_the_chain(organism, problems):
    """Acceptance: the forced-reasoning base model's early-answering curve rises from well below 0.6 to above 0.9."""
    task, probs = problems
    gens = {"forced": generator_completions(organism, "forced", task, probs)}
    ea = quality_report(organism, gens, n_boot=200)["generators"]["forced"]["early_answering"]
    assert ea["n"] >= 35
    assert ea["curve"][0] < 0.6 and ea["curve"][-1] > 0.9
    assert ea["aoc"] > 0.2


def test_batched_scoring_equals_one_at_a_time(organism, problems):
    task, probs = problems
    items = generator_completions(organism, "post_rl", task, probs[:6])
    make = lambda bs: Scorer(organism.post_rl_model, organism.post_rl_tokenizer, ARITH, batch_size=bs)  # noqa: E731
    a, b = score_completions(make(256), task, items), score_completions(make(1), task, items)
    for ra, rb in zip(a, b):
        assert ra["forced"] == rb["forced"]
        assert ra["logp"] == pytest.approx(rb["logp"], abs=1e-4)


def test_report_and_files_are_strict_json_with_plots_and_manifest(organism, problems, tmp_path):
    task, probs = problems
    gens = {"base": generator_completions(organism, "base", task, probs[:10]), "post_rl": generator_completions(organism, "post_rl", task, probs[:10])}
    report = quality_report(organism, gens, scorer="base", n_boot=100)
    assert report["scorer"] == "base" and set(report["records"]) == {"base", "post_rl"}
    paths = write_quality(tmp_path, report)
    names = {p.name for p in paths}
    assert {"quality.json", "records.jsonl", "manifest.json", "early_answering.png", "early_answering.svg", "info_gain.svg", "filler.png"} <= names
    q = json.loads((tmp_path / "quality.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert "records" not in q and q["generators"]["base"]["reasoning_rate"] == 0.0


def test_report_rejects_bad_generators_and_scorers(organism, problems):
    task, probs = problems
    with pytest.raises(ValueError, match="No generators"):
        quality_report(organism, {})
    with pytest.raises(ValueError, match="Unknown model role 'nope'"):
        quality_report(organism, {"x": [(probs[0], "A:1\n")]}, scorer="nope")
    with pytest.raises(ValueError, match="Generator 'x' has no completions"):
        quality_report(organism, {"x": []})
    with pytest.raises(ValueError, match="Unknown generator 'nope'.*hybrid:RUN"):
        build_generators(organism, ["nope"], task, probs[:2])
    with pytest.raises(ValueError, match="named twice"):
        build_generators(organism, ["base", "base"], task, probs[:2])


def _fake_recovery_run(root, task, completions, chosen="greedy_probe_a2.0_t0.5.json"):
    import dataclasses

    from latentreason.recovery import RecoverConfig, points_dir

    cfg = RecoverConfig(n_test=20, seed=0)
    pdir = points_dir(root, cfg)
    pdir.mkdir(parents=True)
    (pdir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    (pdir / "greedy_probe_a2.0_t0.5.json").write_text(json.dumps({"correct": [True] * len(completions), "examples": [{"completion": c, "steered": []} for c in completions]}))
    (root / "recovery" / "recovery.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "chosen": {"greedy": {"alpha": 2.0, "threshold": 0.5, "file": chosen}}}))
    return pdir


def test_hybrid_examples_come_from_a_recovery_run(organism, tmp_path):
    from latentreason.rollouts import task_for_pair

    task = task_for_pair(organism)
    probs = task.sample("test", 20, seed=0)
    _fake_recovery_run(tmp_path, task, [f"A:{p.answer}\n" for p in probs[:3]])
    items = hybrid_examples(tmp_path, task)
    assert [p for p, _ in items] == probs[:3] and all(task.grade(p, c) for p, c in items)
    with pytest.raises(FileNotFoundError, match="No hybrid examples.*latentreason recover"):
        hybrid_examples(tmp_path / "missing", task)


def test_hybrid_examples_are_the_point_chosen_on_dev_of_the_run_config(organism, tmp_path):
    from latentreason.rollouts import task_for_pair

    task = task_for_pair(organism)
    probs = task.sample("test", 20, seed=0)
    pdir = _fake_recovery_run(tmp_path, task, ["A:0\n"] * 3)  # the chosen point got every example wrong
    (pdir / "greedy_probe_a4.0_t0.5.json").write_text(json.dumps({"correct": [True] * 3, "examples": [{"completion": f"A:{p.answer}\n", "steered": []} for p in probs[:3]]}))
    other = tmp_path / "recovery" / "points" / "zzzzzzzzzzzz"  # another config's points
    other.mkdir()
    (other / "greedy_probe_a2.0_t0.5.json").write_text(json.dumps({"correct": [True], "examples": [{"completion": "A:FOREIGN\n", "steered": []}]}))
    assert [c for _, c in hybrid_examples(tmp_path, task)] == ["A:0\n"] * 3  # not the better test point, not another config's
    assert [c for _, c in hybrid_examples(tmp_path, task, point="greedy_probe_a4.0_t0.5")] == [f"A:{p.answer}\n" for p in probs[:3]]
    with pytest.raises(FileNotFoundError, match="greedy_probe_a4.0_t0.5"):
        hybrid_examples(tmp_path, task, point="greedy_probe_a9.0_t0.5")


def test_cli_writes_quality_and_reports_bad_generators(organism, tmp_path):
    from click.testing import CliRunner

    from latentreason.cli import main
    from latentreason.rollouts import task_for_pair

    task = task_for_pair(organism)
    _fake_recovery_run(tmp_path / "run", task, [f"A:{p.answer}\n" for p in task.sample("test", 20, seed=0)[:2]])
    res = CliRunner().invoke(main, ["quality", "--generator", f"base,forced,hybrid:{tmp_path / 'run'}", "--n", "6", "--out", str(tmp_path / "run"), "--scorer", "post_rl"])
    assert res.exit_code == 0, res.output
    q = json.loads((tmp_path / "run" / "quality" / "quality.json").read_text())
    assert set(q["generators"]) == {"base", "forced", "hybrid:run"} and q["generators"]["base"]["n"] == 6
    assert "forced" in res.output
    bad = CliRunner().invoke(main, ["quality", "--generator", "nope", "--n", "2", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "Unknown generator 'nope'" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(main, ["quality", "--generator", "base", "--n", "2", "--fractions", "0,0.5", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "must increase strictly from 0 to 1" in bad.output
