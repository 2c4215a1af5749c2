"""Single-problem SFT: the training example, determinism, effect on the organism, saving, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from latentreason.organism.train import single_training_problem
from latentreason.sft import SFT_INFO, SFTConfig, pair_problem, save_sft_model, single_problem_sft, worked_example
from latentreason.tasks.arith import ArithTask, Problem, strategy_labels


@pytest.fixture(scope="module")
def task(organism):
    from latentreason.rollouts import task_for_pair

    return task_for_pair(organism)


def test_worked_example_is_the_full_planted_solution():
    task = ArithTask()
    p = Problem.parse("2-5-2+8")
    ex = worked_example(p, task)
    assert ex.prompt == task.prompt(p)
    assert ex.labels == ("difference", "difference", "step", "answer")
    assert strategy_labels(ex.completion) == list(ex.labels)
    assert task.grade(p, ex.completion)
    assert ex.completion.splitlines()[-2].endswith(f"={p.answer}")


def test_the_pair_problem_is_the_single_problem_rl_problem(organism, task):
    assert pair_problem(organism) == single_training_problem(task, 0)


def test_sft_is_deterministic_and_leaves_the_base_model_unchanged(organism):
    before = {k: v.clone() for k, v in organism.base_model.state_dict().items()}
    a = single_problem_sft(organism, steps=3, seed=1)
    b = single_problem_sft(organism, steps=3, seed=1)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in a.state_dict().items())
    for k, v in organism.base_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not a.training and a.sft_info["problem"] == pair_problem(organism).expr


def test_default_sft_makes_the_base_model_reason(organism, task):
    from latentreason.organism.evaluate import is_reasoning
    from latentreason.quality import generate

    model = single_problem_sft(organism)
    p = pair_problem(organism)
    assert generate(model, organism.base_tokenizer, task, [p])[0] == worked_example(p, task).completion
    probs = task.sample("test", 30, seed=3)
    before = generate(organism.base_model, organism.base_tokenizer, task, probs)
    after = generate(model, organism.base_tokenizer, task, probs)
    assert sum(map(is_reasoning, before)) <= 3
    assert sum(map(is_reasoning, after)) >= 10  # shipped pair: 0 -> 14 of 30 (38% of 300 in the README's quality table)


def test_saved_sft_model_loads_back_identically(organism, tmp_path):
    from latentreason.pair import load_model

    model = single_problem_sft(organism, steps=2)
    out = save_sft_model(model, organism.base_tokenizer, tmp_path / "sft", extra={"note": "test"})
    save_sft_model(model, organism.base_tokenizer, out)  # overwrites in place
    assert not list(tmp_path.glob(".*tmp"))
    info = json.loads((out / SFT_INFO).read_text())
    assert info["problem"] == pair_problem(organism).expr and info["config"]["steps"] == 2 and "fingerprint" in info
    back = load_model(str(out))
    ids = organism.base_tokenizer(["    2-5-2+8="], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(back(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


def test_bad_inputs_name_the_fix(organism):
    with pytest.raises(ValueError, match="needs its tokenizer"):
        single_problem_sft(organism.base_model, None, Problem.parse("1+2"))
    with pytest.raises(ValueError, match="needs the problem"):
        single_problem_sft(organism.base_model, organism.base_tokenizer)
    with pytest.raises(TypeError, match="organism Problem"):
        single_problem_sft(organism.base_model, organism.base_tokenizer, "1+2")
    with pytest.raises(TypeError, match="ModelPair or a base model"):
        single_problem_sft("model", organism.base_tokenizer, Problem.parse("1+2"))
    with pytest.raises(ValueError, match="steps=0"):
        SFTConfig(steps=0)
    with pytest.raises(ValueError, match="lr=-1"):
        single_problem_sft(organism, lr=-1)
    with pytest.raises(ValueError, match="more than the task's max_k"):
        worked_example(Problem.parse("1+2+3+4+5+6+7+8"), ArithTask())
