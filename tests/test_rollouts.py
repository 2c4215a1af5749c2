"""Rollouts: batched generation, grading, segmentation, artifact and CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from latentreason.cli import main
from latentreason.io import read_json, read_jsonl
from latentreason.manifest import Manifest
from latentreason.organism.evaluate import run_generator
from latentreason.rollouts import generate_rollouts, make_row, read_rollouts, task_for_pair, write_rollouts
from latentreason.tasks.arith import strategy_labels


FIELDS = {"id", "model", "task", "split", "problem_index", "problem", "prompt", "completion", "n_tokens", "finished", "answer", "gold", "correct", "sentences", "labels"}


@pytest.fixture(scope="module")
def rows(organism):
    return generate_rollouts(organism, "arith", "dev", 12, seed=3, models=("post_rl", "base"), batch_size=5)


def test_rows_have_every_field_and_unique_ids(rows):
    assert all(set(r) == FIELDS for r in rows)
    assert len({r["id"] for r in rows}) == len(rows) == 24
    assert [r["model"] for r in rows] == ["post_rl"] * 12 + ["base"] * 12


def test_rows_are_graded_against_the_gold_answer(rows, organism):
    task = task_for_pair(organism)
    for r in rows:
        assert r["correct"] == (r["answer"] == r["gold"]) and r["answer"] == task.extract_answer(r["completion"])
        assert r["prompt"] == task.prompt(type(task.sample("dev", 1)[0]).parse(r["problem"]))


def test_organism_sentences_map_one_to_one_to_planted_labels(rows):
    for r in rows:
        assert r["labels"] == strategy_labels(r["completion"])
        assert [s["label"] for s in r["sentences"]] == r["labels"]
        assert all(r["completion"][s["start"] : s["end"]] == s["text"] for s in r["sentences"])


def test_post_rl_model_reasons_more_than_base(rows):
    reasoning = {m: sum(l not in (None, "answer") for r in rows if r["model"] == m for l in r["labels"]) for m in ("base", "post_rl")}
    assert reasoning["post_rl"] > reasoning["base"]


def test_batched_rollouts_equal_unbatched_and_organism_eval(organism, rows):
    one = generate_rollouts(organism, "arith", "dev", 12, seed=3, models=("post_rl",), batch_size=1)
    assert [r["completion"] for r in one] == [r["completion"] for r in rows if r["model"] == "post_rl"]
    task = task_for_pair(organism)
    problems = task.sample("dev", 12, seed=3)
    max_new = int(organism.defaults.get("max_new_tokens", 96))
    assert run_generator(organism.post_rl_model, organism.base_tokenizer, task, problems, max_new_tokens=max_new) == [r["completion"] for r in one]


def test_sampled_rollouts_are_deterministic_in_seed(organism):
    a = generate_rollouts(organism, "arith", "dev", 6, seed=1, temperature=1.0)
    b = generate_rollouts(organism, "arith", "dev", 6, seed=1, temperature=1.0)
    assert [r["completion"] for r in a] == [r["completion"] for r in b]


def test_bad_requests_raise_errors_that_name_the_fix(organism):
    with pytest.raises(ValueError, match="Unknown model role 'nope'"):
        generate_rollouts(organism, "arith", "dev", 2, models=("nope",))
    with pytest.raises(ValueError, match="at least one"):
        generate_rollouts(organism, "arith", "dev", 0)
    with pytest.raises(ValueError, match="Unknown task"):
        generate_rollouts(dataclasses.replace(organism, task=""), "gsm9k", "dev", 2)
    with pytest.raises(ValueError, match="made for task 'arith'"):
        task_for_pair(organism, "gsm8k")


class ToyTask:
    """A task without strategy labels, with its own problem serialisation."""

    name = "toy"

    def sample(self, split, n, seed=0):
        return [{"q": f"{i}+1", "a": str(i + 1)} for i in range(n)]

    def prompt(self, p):
        return p["q"] + "="

    def problem_to_json(self, p):
        return {"question": p["q"]}

    def gold(self, p):
        return p["a"]

    def extract_answer(self, completion):
        return completion.strip().split("\n")[-1] or None

    def grade(self, p, completion):
        return self.extract_answer(completion) == p["a"]


def test_rollouts_work_for_tasks_without_planted_labels(organism):
    pair = dataclasses.replace(organism, task="")
    rows = generate_rollouts(pair, ToyTask(), "test", 3, max_new_tokens=6)
    assert [r["problem"] for r in rows] == [{"question": f"{i}+1"} for i in range(3)]
    assert all(r["labels"] is None and all(s["label"] is None for s in r["sentences"]) for r in rows)
    assert [r["gold"] for r in rows] == ["1", "2", "3"]


def test_rollouts_work_for_real_math_tasks_and_only_warn_on_another_real_task(organism, caplog):
    from latentreason.tasks.math import MathProblem, MathTask

    task = MathTask("gsm8k", data=[MathProblem(f"p{i}", f"What is {i} plus 2?", str(i + 2)) for i in range(30)])
    pair = dataclasses.replace(organism, task="math500")
    with caplog.at_level("WARNING"):
        rows = generate_rollouts(pair, task, "test", 2, max_new_tokens=4)
    assert "made for task 'math500'" in caplog.text
    assert all(set(r["problem"]) == {"id", "question", "gold"} and r["gold"] == r["problem"]["gold"] for r in rows)
    assert all(r["task"] == "gsm8k" and r["labels"] is None for r in rows)
    with pytest.raises(ValueError, match="made for task 'arith'"):
        generate_rollouts(organism, task, "test", 2)


def test_make_row_labels_each_sentence_of_a_hand_written_completion(organism):
    task = task_for_pair(organism)
    p = task.sample("train", 1)[0]
    row = make_row(task, rollout_id="x", model="post_rl", split="train", index=0, problem=p, completion=f"S:1+1=2\nM:2*3=06=6\nA:{p.answer}\n")
    assert row["labels"] == ["step", "multiply", "answer"] and row["correct"]


def test_written_rollouts_round_trip_and_refuse_corruption(tmp_path, organism, rows):
    task = task_for_pair(organism)
    d = write_rollouts(tmp_path / "rollouts", rows, organism, task, {"split": "dev", "n": 12})
    man, back = read_rollouts(tmp_path)  # a run directory resolves to RUN/rollouts
    assert back == json.loads(json.dumps(rows))
    assert man.kind == "rollouts" and man.config["task"] == "arith" and man.config["task_config"]["max_k"] == task.config.max_k
    assert man.models["post_rl"]["fingerprint"] == organism.fingerprint("post_rl")
    assert man.models["base"]["fingerprint"] == organism.fingerprint("base")
    text = (d / "rollouts.jsonl").read_text()
    (d / "rollouts.jsonl").write_text(text.replace("A:", "A:9", 1))
    with pytest.raises(ValueError, match="rollouts.jsonl is corrupt"):
        read_rollouts(d)
    with pytest.raises(ValueError, match="No rollouts to write"):
        write_rollouts(tmp_path / "empty", [], organism, task)
    with pytest.raises(FileNotFoundError, match="latentreason rollouts"):
        read_rollouts(tmp_path / "missing")


def _hand_edited_run(tmp_path, organism, rows, edit) -> Path:
    """A rollouts artifact whose rows were edited by hand, with a manifest that matches the edited file."""
    from latentreason.io import sha256_file

    d = write_rollouts(tmp_path / "run" / "rollouts", rows, organism, task_for_pair(organism), {"split": "dev"})
    back = read_jsonl(d / "rollouts.jsonl")
    edit(back)
    (d / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in back))
    man = Manifest.read(d)
    dataclasses.replace(man, files={"rollouts.jsonl": sha256_file(d / "rollouts.jsonl")}).write(d)
    return d


def test_rollouts_row_without_completion_is_named_on_read(tmp_path, organism, rows):
    d = _hand_edited_run(tmp_path, organism, rows, lambda rs: rs[2].pop("completion"))
    with pytest.raises(ValueError, match=r"rollouts.jsonl, row 3 \(id 'post_rl-dev-00002'\): field 'completion' is missing\. Regenerate the rollouts"):
        read_rollouts(d)
    res = CliRunner().invoke(main, ["cache", "--pair", organism.source, "--rollouts", str(d.parent), "--sites", "resid_post.1", "--out", str(tmp_path / "acts")])
    assert res.exit_code == 1 and "Traceback" not in res.output and "row 3 (id 'post_rl-dev-00002'): field 'completion' is missing" in res.output


def test_rollouts_rows_with_a_wrong_type_or_a_repeated_id_are_named(tmp_path, organism, rows):
    d = _hand_edited_run(tmp_path / "a", organism, rows, lambda rs: rs[0].update(completion=7))
    with pytest.raises(ValueError, match=r"row 1 .*field 'completion' must be a string, got int"):
        read_rollouts(d)
    d = _hand_edited_run(tmp_path / "b", organism, rows, lambda rs: rs[1].update(id=rs[0]["id"]))
    with pytest.raises(ValueError, match=r"row 2: id 'post_rl-dev-00000' repeats an earlier row's"):
        read_rollouts(d)


def test_cli_writes_rollouts_and_manifest(tmp_path, organism):
    res = CliRunner().invoke(main, ["rollouts", "--pair", organism.source, "--split", "dev", "--n", "4", "--out", str(tmp_path), "--models", "post_rl,base", "--seed", "2"])
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "rollouts" / "rollouts.jsonl")
    assert len(rows) == 8 and {r["model"] for r in rows} == {"post_rl", "base"}
    man = Manifest.read(tmp_path / "rollouts", kind="rollouts")
    assert man.config["seed"] == 2 and man.config["models"] == ["post_rl", "base"] and man.config["max_new_tokens"] > 0
    assert read_json(tmp_path / "rollouts" / "manifest.json")["files"]["rollouts.jsonl"]


def test_cli_turns_bad_input_into_one_line_errors(tmp_path, organism):
    res = CliRunner().invoke(main, ["rollouts", "--pair", organism.source, "--task", "gsm8k", "--n", "2", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "made for task 'arith'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["rollouts", "--pair", str(tmp_path / "nopair"), "--n", "2", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Cannot load pair" in res.output
