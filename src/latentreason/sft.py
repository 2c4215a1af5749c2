"""Single-problem SFT: the base model fine-tuned on ONE worked solution of ONE training problem.

The supervised counterpart of single-problem RL ("1-shot RL"): same problem
(:func:`latentreason.organism.train.single_training_problem`, recorded in the pair manifest as
``single_problem``), but instead of reward on sampled completions, a few dozen Adam steps of
cross-entropy on the completion tokens of its full worked solution
(:func:`latentreason.tasks.arith.planted_solution`).
It asks whether a single demonstration is enough to make the base model *choose* to reason.

Training is seeded and deterministic (full batch of one example, no dropout). The result is a
Hugging Face model directory (written atomically) with an ``sft.json`` recording what made it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentreason.io import read_json, write_json
from latentreason.organism.corpus import Example
from latentreason.tasks.arith import ArithConfig, ArithTask, Problem, planted_solution

log = logging.getLogger(__name__)

SFT_INFO = "sft.json"
SFT_KIND = "latentreason-single-problem-sft"


@dataclass(frozen=True)
class SFTConfig:
    """Settings of a single-problem SFT run."""

    steps: int = 30  # Adam steps on the one example
    lr: float = 1e-4  # organism: 1e-3 memorises the solution and breaks the copying of digits; 3e-5 changes nothing in 30 steps
    seed: int = 0
    clip: float = 1.0  # gradient-norm clip, as in the organism's training

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"steps={self.steps!r} must be a positive integer, e.g. 30.")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be positive, e.g. 1e-4.")
        if not self.clip > 0:
            raise ValueError(f"clip={self.clip!r} must be positive.")


def worked_example(problem: Problem, task: ArithTask | None = None) -> Example:
    """The full planted worked solution of ``problem`` (every step, each with its strategy) as a training example."""
    if not isinstance(problem, Problem):
        raise TypeError(f"Single-problem SFT needs an organism Problem (e.g. Problem.parse('2-5-2+8')), got {type(problem).__name__}: {problem!r:.80}.")
    task = task or ArithTask()
    if len(problem.digits) > task.config.max_k:
        raise ValueError(f"Problem {problem.expr!r} has {len(problem.digits)} digits, more than the task's max_k={task.config.max_k}.")
    sents, labels = planted_solution(problem, task.config.line_width)
    return Example(problem, task.prompt(problem), tuple(sents), tuple(labels))


def pair_problem(pair) -> Problem:
    """The single-problem RL problem of an organism pair (manifest key ``single_problem``, else seed 0's)."""
    from latentreason.organism.train import single_training_problem
    from latentreason.pair import PAIR_MANIFEST

    task = _task_of(pair)
    man = Path(getattr(pair, "source", "") or ".") / PAIR_MANIFEST
    if man.exists():
        info = read_json(man)
        if info.get("single_problem"):
            return Problem.parse(info["single_problem"], task.config.modulus)
        return single_training_problem(task, int(info.get("seed", 0)))
    return single_training_problem(task, 0)


def _task_of(pair) -> ArithTask:
    cfg = getattr(pair, "task_config", None) or {}
    return ArithTask(ArithConfig(**cfg))


def single_problem_sft(pair_or_base_model, tokenizer=None, problem: Problem | None = None, *, steps: int = 30, lr: float = 1e-4, seed: int = 0, task: ArithTask | None = None):
    """A copy of the base model fine-tuned on ``problem``'s worked solution; the input is not changed.

    Args:
        pair_or_base_model: an organism :class:`~latentreason.pair.ModelPair` (its base model,
            tokenizer, task and single-problem RL problem are the defaults) or a base model.
        tokenizer: the base model's tokenizer (required with a bare model).
        problem: the training problem (default: the pair's ``single_problem``).

    Returns the fine-tuned model in eval mode; its ``sft_info`` attribute records the problem,
    the solution text, the settings and the final loss (saved by :func:`save_sft_model`).

    Example:
        >>> from latentreason.organism import load_default
        >>> model = single_problem_sft(load_default(), steps=2)
        >>> model.training
        False
    """
    cfg = SFTConfig(steps=steps, lr=lr, seed=seed)
    from latentreason.pair import ModelPair

    if isinstance(pair_or_base_model, ModelPair):
        pair = pair_or_base_model
        base, tokenizer = pair.base_model, tokenizer or pair.base_tokenizer
        task = task or _task_of(pair)
        problem = problem if problem is not None else pair_problem(pair)
    else:
        base = pair_or_base_model
        if not isinstance(base, torch.nn.Module):
            raise TypeError(f"Expected a ModelPair or a base model (torch module), got {type(base).__name__}.")
        if tokenizer is None:
            raise ValueError("A bare base model needs its tokenizer: single_problem_sft(model, tokenizer, problem).")
        if problem is None:
            raise ValueError("A bare base model needs the problem to train on: pass problem= (e.g. single_training_problem(task, seed)).")
    from latentreason.organism.train import encode_examples, lm_loss

    ex = worked_example(problem, task)
    ids, labels = encode_examples([ex], tokenizer)
    device = next(base.parameters()).device
    ids, labels = ids.to(device), labels.to(device)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(base)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model, ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if step == 0 or step + 1 == cfg.steps:
            log.info("sft step %d/%d loss %.4f", step + 1, cfg.steps, loss.item())
    model.eval()
    model.sft_info = {"kind": SFT_KIND, "problem": problem.expr, "completion": ex.completion, "config": dataclasses.asdict(cfg), "final_loss": float(loss.item())}
    return model


def save_sft_model(model, tokenizer, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (+ tokenizer and ``sft.json``) as a Hugging Face model directory, atomically.

    The directory is written into a hidden temporary sibling and renamed onto ``out``
    (an existing ``out`` is replaced). It loads with :func:`latentreason.pair.load_model`.
    """
    from latentreason.fingerprint import model_fingerprint

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another output directory.")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = read_json(out / SFT_INFO).get("kind") == SFT_KIND
        except (FileNotFoundError, ValueError, AttributeError):
            ours = False
        if not ours:  # only an SFT model this module wrote is ever replaced
            raise ValueError(f"{out} is not empty and holds no single-problem SFT model ({SFT_INFO} missing); nothing there is touched. Choose an empty or new directory.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {**getattr(model, "sft_info", {"kind": SFT_KIND}), **(extra or {}), "fingerprint": model_fingerprint(model)}
        write_json(tmp / SFT_INFO, info)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("single-problem SFT model written to %s", out)
    return out
