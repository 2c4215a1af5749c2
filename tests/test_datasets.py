"""Loading GSM8K / MATH-500 from local files, the hash partition into splits, and the math tasks' interface."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from latentreason import datasets
from latentreason.datasets import load_gsm8k, load_math500
from latentreason.tasks import ArithTask, MathProblem, MathTask, get_task

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

GSM8K_ROWS = [
    {"question": f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?", "answer": f"{i} + {i + 3} = <<{i}+{i + 3}={2 * i + 3}>>{2 * i + 3}\n#### {2 * i + 3:,}"}
    for i in range(1, 401, 7)
]
MATH_ROWS = [
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{4}$.", "solution": "It is $\\boxed{\\frac{3}{4}}$.", "answer": "\\frac{3}{4}", "subject": "Prealgebra", "level": 1},
    {"problem": "Solve $x^2 = 4$ for $x > 0$.", "solution": "So $x = \\boxed{2}$.", "answer": "2", "subject": "Algebra", "level": "Level 2"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """The real GSM8K / MATH-500 copies in ``shared/data`` beside the repository (CI places them there)."""
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists() or not (SHARED_DATA / "math500" / "test.jsonl").exists():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA} (expected gsm8k/test.jsonl and math500/test.jsonl)")
    return SHARED_DATA


def test_gsm8k_loads_from_local_jsonl_with_the_number_after_hashes_as_gold(tmp_path):
    probs = load_gsm8k(_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS))
    assert len(probs) == len(GSM8K_ROWS)
    assert probs[-1].gold == "803" and GSM8K_ROWS[-1]["answer"].endswith("#### 803")
    big = load_gsm8k(_jsonl(tmp_path / "big.jsonl", [{"question": "q?", "answer": "a lot\n#### 1,450,000"}]))
    assert big[0].gold == "1450000"  # thousands commas are dropped
    assert probs[0].question == GSM8K_ROWS[0]["question"] and probs[0].solution == GSM8K_ROWS[0]["answer"]
    assert probs[0].id.startswith("gsm8k-") and len({p.id for p in probs}) == len(probs)


def test_math500_loads_from_local_jsonl_and_parquet_identically(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [dict(r, level=int(str(r["level"]).removeprefix("Level ").strip())) for r in MATH_ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    from_jsonl = load_math500(_jsonl(tmp_path / "m.jsonl", MATH_ROWS))
    from_parquet = load_math500(tmp_path / "m.parquet")
    assert from_jsonl == from_parquet
    assert from_jsonl[0].gold == "\\frac{3}{4}" and from_jsonl[0].subject == "Prealgebra" and from_jsonl[1].level == 2


def test_gsm8k_loads_from_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GSM8K_ROWS), tmp_path / "test.parquet")
    assert load_gsm8k(tmp_path / "test.parquet") == load_gsm8k(_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS))


def test_a_data_directory_finds_the_dataset_file_in_the_shared_layout(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "math500").mkdir()
    _jsonl(tmp_path / "gsm8k" / "test.jsonl", GSM8K_ROWS)
    _jsonl(tmp_path / "math500" / "test.jsonl", MATH_ROWS)
    assert len(load_gsm8k(tmp_path)) == len(GSM8K_ROWS) and len(load_math500(tmp_path)) == len(MATH_ROWS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No gsm8k data in directory"):
        load_gsm8k(tmp_path / "empty")


def test_malformed_json_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GSM8K_ROWS[0]) + "\n\n" + '{"question": "x", "answer": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        load_gsm8k(path)


def test_row_missing_a_field_is_reported_with_file_line_and_field(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [MATH_ROWS[0], {"problem": "p", "solution": "s"}])
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2: missing or empty text field 'answer'"):
        load_math500(path)


def test_gsm8k_answer_without_hashes_is_refused(tmp_path):
    path = _jsonl(tmp_path / "g.jsonl", [{"question": "q?", "answer": "it is 4"}])
    with pytest.raises(ValueError, match=r"g\.jsonl, line 1: GSM8K 'answer' must end with '#### <number>'"):
        load_gsm8k(path)


def test_missing_or_unsupported_file_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        load_gsm8k(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(ValueError, match="JSONL.*Parquet"):
        load_gsm8k(tmp_path / "x.csv")


def test_no_file_and_no_datasets_library_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(FileNotFoundError, match="--data PATH"):
        load_gsm8k()


def test_no_file_and_unreachable_hub_is_a_clear_error(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(FileNotFoundError, match=r"HuggingFaceH4/MATH-500.*hub unreachable.*--data PATH"):
        load_math500()


def test_hub_rows_go_through_the_same_schema(monkeypatch):
    calls = []

    def load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return GSM8K_ROWS[:3]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert [p.gold for p in load_gsm8k()] == ["5", "19", "33"]
    assert calls == [("openai/gsm8k", "main", "test")]


# ------------------------------------------------------------------ splits and the task interface


def test_splits_partition_the_dataset_disjointly_and_deterministically(shared_data):
    for name in ("gsm8k", "math500"):
        task = get_task(name, data=shared_data)
        parts = {s: {p.id for p in task.split(s)} for s in ("train", "dev", "test")}
        assert sum(len(v) for v in parts.values()) == len(task.problems)
        assert not (parts["train"] & parts["dev"]) and not (parts["train"] & parts["test"]) and not (parts["dev"] & parts["test"])
        n = len(task.problems)
        assert abs(len(parts["train"]) / n - 0.3) < 0.05 and abs(len(parts["test"]) / n - 0.6) < 0.05
        again = get_task(name, data=shared_data)
        assert {s: {p.id for p in again.split(s)} for s in parts} == parts
        assert task.sample("train", 20, seed=3) == again.sample("train", 20, seed=3)
        assert task.sample("train", 20, seed=3) != task.sample("train", 20, seed=4)


def test_split_of_a_problem_does_not_depend_on_which_file_holds_it(tmp_path):
    full = MathTask("gsm8k", _jsonl(tmp_path / "all.jsonl", GSM8K_ROWS))
    part = MathTask("gsm8k", _jsonl(tmp_path / "part.jsonl", GSM8K_ROWS[::-1][:10]))
    by_id = {p.id: full.split_of(p) for p in full.problems}
    assert all(by_id[p.id] == part.split_of(p) for p in part.problems)


def test_sampling_more_than_a_split_holds_is_a_clear_error(tmp_path):
    task = MathTask("math500", _jsonl(tmp_path / "m.jsonl", MATH_ROWS))
    available = len(task.split("test"))
    with pytest.raises(ValueError, match=f"which has only {available}"):
        task.sample("test", available + 1)
    with pytest.raises(ValueError, match="Unknown split 'valid'"):
        task.sample("valid", 1)


def test_a_repeated_question_is_loaded_once_so_samples_never_hold_it_twice(tmp_path, caplog):
    rows = GSM8K_ROWS + GSM8K_ROWS[:5]  # five questions appear twice, with the same answer
    task = MathTask("gsm8k", _jsonl(tmp_path / "dup.jsonl", rows))
    with caplog.at_level("WARNING", logger="latentreason.tasks.math"):
        assert len(task.problems) == len(GSM8K_ROWS)
    assert "dropped 5 repeated question(s)" in caplog.text
    test = task.sample("test", len(task.split("test")), seed=0)
    assert len({p.question for p in test}) == len(test)
    clash = [*GSM8K_ROWS, {**GSM8K_ROWS[0], "answer": "so #### 999"}]
    with pytest.raises(ValueError, match="appears twice with different gold answers"):
        MathTask("gsm8k", _jsonl(tmp_path / "clash.jsonl", clash)).problems


def test_math_task_prompts_with_the_question_and_grades_final_answers(tmp_path):
    task = get_task("math500", data=_jsonl(tmp_path / "m.jsonl", MATH_ROWS))
    p = task.problems[0]
    assert task.name == "math500" and task.prompt(p) == MATH_ROWS[0]["problem"]
    assert task.grade(p, "Adding, we get $0.75$, i.e. $\\boxed{\\dfrac{3}{4}}$.")
    assert not task.grade(p, "\\boxed{\\frac{1}{2}}")
    assert task.extract_answer("so \\boxed{0.75}") == "0.75" and task.gold(p) == "\\frac{3}{4}"


def test_every_shared_gold_solution_grades_correct_through_the_task(shared_data):
    for name in ("gsm8k", "math500"):
        task = get_task(name, data=shared_data)
        assert all(task.grade(p, p.solution) for p in task.problems)


def test_problems_round_trip_through_json_for_both_task_kinds(tmp_path):
    math_task = MathTask("gsm8k", _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS))
    p = math_task.problems[0]
    obj = json.loads(json.dumps(math_task.problem_to_json(p)))
    assert obj == {"id": p.id, "question": p.question, "gold": p.gold}
    back = math_task.problem_from_json(obj)
    assert (back.id, back.question, back.gold) == (p.id, p.question, p.gold) and math_task.grade(back, f"#### {p.gold}")
    arith = ArithTask()
    q = arith.sample("test", 1, seed=0)[0]
    assert arith.problem_to_json(q) == q.expr and arith.problem_from_json(json.loads(json.dumps(arith.problem_to_json(q)))) == q
    with pytest.raises(ValueError, match="id, question, gold"):
        math_task.problem_from_json({"question": "q"})


def test_get_task_knows_the_real_tasks_and_refuses_data_for_arith(tmp_path):
    assert isinstance(get_task("gsm8k"), MathTask)  # loads lazily: no I/O here
    with pytest.raises(ValueError, match="takes no data file"):
        get_task("arith", data=tmp_path)
    with pytest.raises(ValueError, match="known tasks are arith, gsm8k, math500"):
        get_task("aime")


def test_math_task_accepts_problems_directly():
    task = MathTask("gsm8k", data=[MathProblem("a", "What is 2+3?", "5")])
    assert task.grade(task.problems[0], "#### 5") and datasets.HUB["gsm8k"][0] == "openai/gsm8k"
