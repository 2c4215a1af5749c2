"""Test helpers: steering vectors built by hand until ``latentreason extract`` lands.

The "step" vector is a difference of means on the organism's base model: teacher-force worked
solutions from the pre-RL corpus generator and take the activation at each *decision* position
(a newline, whose next token opens the next sentence); the mean where the next sentence is a step
(``S:``) minus the mean where it is the answer (``A:``). Added at step 0 (the last prompt token,
which decides the first generated token) it makes the base model open a worked solution.

Which contrast works depends on the trained model: on the shipped pair this one does
(100% reasoning at alpha >= 0.5), while "first continuation token S minus A" does not.
"""

from __future__ import annotations

import torch

from latentreason.hooks import record
from latentreason.organism.corpus import CorpusConfig, make_corpus
from latentreason.pair import ModelPair
from latentreason.tasks.arith import ArithConfig, ArithTask
from latentreason.vectors import SteeringVector


def organism_task(pair: ModelPair) -> ArithTask:
    return ArithTask(ArithConfig(**pair.task_config)) if pair.task_config else ArithTask()


@torch.no_grad()
def decision_means(pair: ModelPair, sites: list[str], markers: tuple[str, ...], n: int = 256, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """``{site: {marker: [d_model]}}``: mean activation at newlines followed by each marker, over ``n`` worked solutions."""
    task, tok, model = organism_task(pair), pair.base_tokenizer, pair.base_model
    examples = make_corpus(task, n, CorpusConfig(worked_fraction=1.0), seed=seed)
    enc = tok([e.prompt + e.completion for e in examples], return_tensors="pt", padding=True)
    with record(model, sites) as acts:
        model(**enc)
    ids = enc.input_ids
    decision = ids[:, :-1] == tok.convert_tokens_to_ids("\n")  # [batch, pos - 1]
    nxt = ids[:, 1:]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for site in sites:
        h = acts[site][0][:, :-1].float()  # [batch, pos - 1, d_model]
        out[site] = {m: h[decision & (nxt == tok.convert_tokens_to_ids(m))].mean(0) for m in markers}
    return out


def step_vector(pair: ModelPair, site: str = "resid_post.1", n: int = 256, seed: int = 0) -> SteeringVector:
    """Diff-of-means "next sentence is a step (S:) minus it is the answer (A:)" for the base model."""
    means = decision_means(pair, [site], ("S", "A"), n=n, seed=seed)[site]
    return SteeringVector("step", means["S"] - means["A"], site, "diffmeans", pair.fingerprint("base"), {"strategy": "step", "n": n, "seed": seed, "how": "tests/_vectors.py"})


def organism_vectors(pair: ModelPair, n: int = 256) -> list[SteeringVector]:
    """``step`` and ``check`` at resid_post.1, ``step@resid_post.2`` and a norm-matched ``random`` control."""
    means = decision_means(pair, ["resid_post.1", "resid_post.2"], ("S", "A", "C"), n=n)
    m1, m2 = means["resid_post.1"], means["resid_post.2"]
    fp = pair.fingerprint("base")
    step = SteeringVector("step", m1["S"] - m1["A"], "resid_post.1", "diffmeans", fp, {"strategy": "step", "n": n})
    check = SteeringVector("check", m1["C"] - m1["A"], "resid_post.1", "diffmeans", fp, {"strategy": "check", "n": n})
    step2 = SteeringVector("step@resid_post.2", m2["S"] - m2["A"], "resid_post.2", "diffmeans", fp, {"strategy": "step", "n": n})
    g = torch.Generator().manual_seed(0)
    rnd = torch.randn(step.d_model, generator=g)
    random = SteeringVector("random", rnd * (step.norm / rnd.norm()), "resid_post.1", "random", fp, {"control": "norm-matched to step"})
    return [step, check, step2, random]
