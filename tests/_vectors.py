"""Test helpers: steering vectors built by hand, independent of ``latentreason extract``.

A hand-built strategy vector is a *logit-difference direction*: the base model's unembedding row
of the strategy's marker (e.g. ``M`` for multiply) minus that of the answer marker ``A``, unit
length. Added at a decision position (the prompt's last token, or a newline) it raises the
marker's logit against answering directly. The "step" vector uses the mean row of the worked
markers (``S``, ``D``, ``M``); added at step 0 with ``STEP_ALPHA`` it makes the base model open a
worked solution, with the strategy of the problem's first operation.

(Differences of means between decision positions do not steer the organism's base model: the
corpus made its choice a coin flip that the residual stream does not encode in advance, so such
contrasts only capture the context; see the README.)
"""

from __future__ import annotations

import torch

from latentreason.pair import ModelPair
from latentreason.tasks.arith import ArithConfig, ArithTask
from latentreason.vectors import SteeringVector

WORK = ("S", "D", "M")  # the worked strategies' markers
STEP_ALPHA = 15.0  # resid_post.1 of the shipped pair, 100 test problems: 0% reasoning at alpha 2, 15% at 10, 100% at 15, 89% at 20


def organism_task(pair: ModelPair) -> ArithTask:
    return ArithTask(ArithConfig(**pair.task_config)) if pair.task_config else ArithTask()


def logit_direction(pair: ModelPair, markers: tuple[str, ...], against: str = "A") -> torch.Tensor:
    """Unit ``mean(W_U[markers]) - W_U[against]`` of the base model."""
    tok = pair.base_tokenizer
    W = pair.base_model.get_output_embeddings().weight.detach().float()
    d = W[[tok.convert_tokens_to_ids(m) for m in markers]].mean(0) - W[tok.convert_tokens_to_ids(against)]
    return d / d.norm()


def step_vector(pair: ModelPair, site: str = "resid_post.1") -> SteeringVector:
    """"Next sentence is a worked step (S:, D: or M:), not the answer (A:)" for the base model."""
    return SteeringVector("step", logit_direction(pair, WORK), site, "manual", pair.fingerprint("base"), {"strategy": "step", "how": "tests/_vectors.py"})


def organism_vectors(pair: ModelPair) -> list[SteeringVector]:
    """``step`` and ``multiply`` at resid_post.1, ``step@resid_post.2`` and a norm-matched ``random`` control."""
    fp = pair.fingerprint("base")
    step = step_vector(pair)
    mult = SteeringVector("multiply", logit_direction(pair, ("M",)), "resid_post.1", "manual", fp, {"strategy": "multiply"})
    step2 = SteeringVector("step@resid_post.2", logit_direction(pair, WORK), "resid_post.2", "manual", fp, {"strategy": "step"})
    g = torch.Generator().manual_seed(0)
    rnd = torch.randn(step.d_model, generator=g)
    random = SteeringVector("random", rnd * (step.norm / rnd.norm()), "resid_post.1", "random", fp, {"control": "norm-matched to step"})
    return [step, mult, step2, random]
