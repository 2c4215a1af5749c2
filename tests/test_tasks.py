import pytest

from latentreason.organism.corpus import CorpusConfig, make_corpus
from latentreason.tasks import get_task
from latentreason.tasks.arith import (
    STRATEGY_OF_OP,
    ArithConfig,
    ArithTask,
    Problem,
    planted_solution,
    strategy_labels,
)


def test_left_to_right_mod_10_evaluation():
    p = Problem.parse("3+4*2-7")
    assert p.intermediates == [7, 4, 7] and p.answer == 7


def test_prompts_have_fixed_width():
    task = ArithTask()
    widths = {len(task.prompt(p)) for p in task.sample("train", 200)}
    assert widths == {task.config.prompt_width + 1}


def test_generation_is_deterministic_and_splits_never_overlap():
    task = ArithTask()
    assert task.sample("dev", 50, seed=3) == task.sample("dev", 50, seed=3)
    exprs = {s: {p.expr for p in task.sample(s, 400, seed=1)} for s in ("train", "dev", "test")}
    assert not (exprs["train"] & exprs["test"]) and not (exprs["train"] & exprs["dev"]) and not (exprs["dev"] & exprs["test"])


def test_grading_reads_the_last_answer_line_exactly():
    task, p = ArithTask(), Problem.parse("3+4*2-7")
    assert task.grade(p, "S:     3+4=7*2-7\nA:7\n")
    assert not task.grade(p, "A:6\n")
    assert not task.grade(p, "S:     3+4=7*2-7\n")
    assert task.grade(p, "A:1\nA:7\n")


@pytest.mark.parametrize(
    "kwargs, match",
    [({"min_k": 5, "max_k": 3}, "k range"), ({"ops": ("+", "/")}, "Unknown op"), ({"min_k": 1}, "k range"), ({"split_fractions": (0.5, 0.5, 0.5)}, "sum")],
)
def test_bad_task_config_is_refused_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArithConfig(**kwargs)


def test_unknown_task_name_lists_known_tasks():
    with pytest.raises(ValueError, match="arith"):
        get_task("sudoku")


def test_worked_solutions_carry_planted_labels_that_match_their_markers():
    task = ArithTask()
    corpus = make_corpus(task, 300, CorpusConfig(worked_fraction=1.0), seed=0)
    for ex in corpus:
        assert list(ex.labels) == strategy_labels(ex.completion)
        assert task.grade(ex.problem, ex.completion)
    kinds = {l for ex in corpus for l in ex.labels}
    assert kinds == {"step", "difference", "multiply", "answer"}


def test_each_operation_is_worked_with_its_own_strategy_and_the_lines_compute_the_chain():
    task = ArithTask()
    p = Problem.parse("3+4*2-7")
    sents, labels = planted_solution(p, task.config.line_width)
    assert labels == ["step", "multiply", "difference", "answer"]
    assert [s.split()[1] for s in sents[:-1]] == ["3+4=7*2-7", "7*2=14=4-7", "4-7=4+3=7"] and sents[-1] == "A:7"
    for q in task.sample("train", 200):
        sents, labels = planted_solution(q, task.config.line_width)
        assert labels[:-1] == [STRATEGY_OF_OP[op] for op in q.ops]
        results = [int(s.split()[1].split("=")[-1][0]) for s in sents[:-1]]  # the running value after each step
        assert results == q.intermediates


def test_worked_solutions_stop_early_only_where_the_strategy_switches():
    task = ArithTask()
    corpus = make_corpus(task, 2000, CorpusConfig(worked_fraction=1.0, switch_continue=0.4), seed=0)
    at_first_switch, with_switch = 0, 0
    for ex in corpus:
        full, labels = planted_solution(ex.problem, task.config.line_width)
        n = len(ex.sentences) - 1  # worked lines kept
        assert list(ex.sentences[:n]) == full[:n] and ex.sentences[-1] == full[-1]
        if n < len(full) - 1:
            assert labels[n] != labels[n - 1]  # it stopped where the next operation needs another strategy
        first = next((j for j in range(1, len(labels) - 1) if labels[j] != labels[j - 1]), None)
        if first is not None:
            with_switch += 1
            at_first_switch += n == first
    assert abs(at_first_switch / with_switch - 0.6) < 0.05  # 1 - switch_continue


def test_worked_lines_share_one_width_so_columns_align():
    task = ArithTask()
    for ex in make_corpus(task, 100, CorpusConfig(worked_fraction=1.0), seed=2):
        widths = {len(s) for s, l in zip(ex.sentences, ex.labels) if l != "answer"}
        assert widths == {task.config.line_width + 3}


def test_corpus_is_mostly_direct_answers():
    corpus = make_corpus(ArithTask(), 2000, CorpusConfig(), seed=0)
    share = sum(ex.worked for ex in corpus) / len(corpus)
    assert 0.20 < share < 0.30  # worked_fraction 0.25


def test_bad_corpus_config_is_refused():
    with pytest.raises(ValueError, match="worked_fraction"):
        CorpusConfig(worked_fraction=1.5)


# ------------------------------------------------------------------ distinct evaluation samples


def test_evaluation_samples_hold_distinct_problems():
    task = ArithTask()
    for n in (150, 600):  # the demo's and recover's test sizes: drawn with replacement they held 138 and 506 distinct problems
        problems = task.sample("test", n, seed=0)
        assert len(problems) == n and len(set(problems)) == n
    assert len(set(task.sample("train", 2000, seed=1))) == 2000


def test_a_smaller_distinct_sample_is_a_prefix_of_a_larger_one():
    task = ArithTask()
    assert task.sample("dev", 200, seed=5)[:60] == task.sample("dev", 60, seed=5)


def test_asking_for_more_distinct_problems_than_a_split_holds_is_refused_with_its_size():
    import itertools

    task = ArithTask(ArithConfig(min_k=2, max_k=2))
    every = [Problem(d, o) for d in itertools.product(range(10), repeat=2) for o in itertools.product("+-*", repeat=1)]
    size = sum(task.split_of(p) == "test" for p in every)
    assert task.split_size("test") == size and ArithTask().split_size("test") is None  # the default space is far too large to run out
    assert sorted(task.sample("test", size, seed=2), key=lambda p: p.expr) == sorted((p for p in every if task.split_of(p) == "test"), key=lambda p: p.expr)
    with pytest.raises(ValueError, match=f"which has only {size} .* ask for at most {size}"):
        task.sample("test", size + 1)
    assert len(task.sample("test", size + 50, distinct=False)) == size + 50  # with replacement there is no such bound


@pytest.mark.slow  # about 5 s: hashes the 60k-example corpus and the 20k RL pool
def test_training_pools_are_still_drawn_with_replacement_as_the_organism_was_trained():
    import hashlib

    from latentreason.io import read_json
    from latentreason.organism import DEFAULT_DIR
    from latentreason.organism.train import OrganismConfig, corpus_hash, single_training_problem

    shipped = read_json(DEFAULT_DIR / "pair.json")
    cfg, seed = OrganismConfig.from_dict(shipped["config"]), shipped["seed"]
    task = ArithTask(cfg.task)
    assert corpus_hash(cfg, seed) == shipped["corpus_sha256"]  # the pretraining corpus the shipped pair was trained on
    pool = task.sample("train", 20_000, seed=seed + 1, distinct=False)  # grpo's RL pool
    assert len(set(pool)) < len(pool)
    assert hashlib.sha256("\n".join(p.expr for p in pool).encode()).hexdigest() == "47450cfa790a17741283d5919ae40d67919ebb0d7a6b72e222c195d8e45bb03a"  # measured before distinct sampling
    assert single_training_problem(task, seed).expr == shipped["single_problem"]
