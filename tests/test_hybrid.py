import dataclasses

import pytest
import torch

from latentreason.generation import decode, left_pad
from latentreason.hooks import active_hooks
from latentreason.hybrid import HybridEngine
from latentreason.routers import NONE, OracleRouter, ProbeRouter
from latentreason.tasks.arith import ArithTask
from latentreason.vectors import SteeringVector

SITE = "resid_post.1"


@pytest.fixture(scope="module")
def setup(organism):
    pair = organism
    d = pair.base_model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    vectors = [SteeringVector(n, torch.randn(d, generator=g) * 3, SITE, "manual", pair.fingerprint("base")) for n in ("a", "b")]
    X = torch.randn(300, d, generator=g)
    router = ProbeRouter(["a", "b"], SITE, threshold=0.4).fit(X, torch.arange(300) % 3 - 1, fingerprint=pair.fingerprint("post_rl"))
    task = ArithTask()
    prompts = [task.prompt(p) for p in task.sample("test", 16, seed=0)]
    return pair, vectors, router, prompts


def _plain(pair, prompts, n):
    tok = pair.base_tokenizer
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id)
    return decode(pair.base_model, ids, mask, max_new_tokens=n, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).completions(tok)


def test_alpha_zero_hybrid_equals_plain_base_generation(setup):
    pair, vectors, router, prompts = setup
    res = HybridEngine(pair, vectors, router, alpha=0.0).generate(prompts, max_new_tokens=40)
    assert res.completions == _plain(pair, prompts, 40)


def test_every_step_is_recorded_and_budget_counts_steered_tokens(setup):
    pair, vectors, router, prompts = setup
    res = HybridEngine(pair, vectors, router, alpha=2.0, force=1).generate(prompts, max_new_tokens=20)
    assert res.budget == 1.0
    assert all(name == "b" for _, name in res.steered(0))
    none = HybridEngine(pair, vectors, router, alpha=2.0, force=NONE).generate(prompts, max_new_tokens=20)
    assert none.budget == 0.0 and none.completions == _plain(pair, prompts, 20)


def test_steering_changes_generation(setup):
    pair, vectors, router, prompts = setup
    big = [dataclasses.replace(v, direction=v.direction * 20) for v in vectors]
    res = HybridEngine(pair, big, router, alpha=1.0, force=0).generate(prompts, max_new_tokens=20)
    assert res.completions != _plain(pair, prompts, 20)


def test_batch_size_does_not_change_greedy_hybrid_output(setup):
    pair, vectors, router, prompts = setup
    eng = HybridEngine(pair, vectors, router, alpha=3.0)
    a = eng.generate(prompts, max_new_tokens=30, batch_size=16)
    b = eng.generate(prompts, max_new_tokens=30, batch_size=1)
    assert a.completions == b.completions
    assert torch.equal(a.decisions[:, : b.decisions.shape[1]], b.decisions[:, : a.decisions.shape[1]])


def test_sampled_hybrid_is_seeded(setup):
    pair, vectors, router, prompts = setup
    eng = HybridEngine(pair, vectors, router, alpha=1.0)
    assert eng.generate(prompts, max_new_tokens=20, temperature=1.0, seed=3).completions == eng.generate(prompts, max_new_tokens=20, temperature=1.0, seed=3).completions


def test_oracle_router_is_labelled_and_runs(setup):
    pair, vectors, router, prompts = setup
    res = HybridEngine(pair, vectors, OracleRouter(router), alpha=1.0).generate(prompts, max_new_tokens=20)
    assert res.is_oracle


def test_hooks_are_removed_even_when_the_router_raises(setup):
    pair, vectors, router, prompts = setup
    before = (active_hooks(pair.base_model), active_hooks(pair.post_rl_model))

    class Boom(ProbeRouter):
        def predict(self, X, ctx=None):
            raise RuntimeError("boom")

    bad = Boom(router.strategies, SITE)
    bad.mean_, bad.scale_, bad.coef_, bad.intercept_, bad.fingerprint = router.mean_, router.scale_, router.coef_, router.intercept_, router.fingerprint
    with pytest.raises(RuntimeError, match="boom"):
        HybridEngine(pair, vectors, bad, alpha=1.0).generate(prompts, max_new_tokens=5)
    assert (active_hooks(pair.base_model), active_hooks(pair.post_rl_model)) == before


def test_engine_refuses_foreign_vectors_routers_and_bad_alpha(setup):
    pair, vectors, router, prompts = setup
    foreign = [dataclasses.replace(v, fingerprint="0" * 16) for v in vectors]
    with pytest.raises(ValueError, match="made for model"):
        HybridEngine(pair, foreign, router, alpha=1.0)
    other = ProbeRouter(router.strategies, SITE)
    other.mean_, other.scale_, other.coef_, other.intercept_, other.fingerprint = router.mean_, router.scale_, router.coef_, router.intercept_, "f" * 16
    with pytest.raises(ValueError, match="Retrain it for this model"):
        HybridEngine(pair, vectors, other, alpha=1.0)
    far = ProbeRouter(router.strategies, "resid_post.40")
    far.mean_, far.scale_, far.coef_, far.intercept_, far.fingerprint = router.mean_, router.scale_, router.coef_, router.intercept_, router.fingerprint
    with pytest.raises(ValueError, match="layers 0"):
        HybridEngine(pair, vectors, far, alpha=1.0)
    with pytest.raises(ValueError, match="not a number"):
        HybridEngine(pair, vectors, router, alpha="strong")
    with pytest.raises(ValueError, match="one vector per strategy"):
        HybridEngine(pair, vectors[:1], router, alpha=1.0)


def test_rewinding_a_step_and_rerunning_it_gives_the_same_logits(organism):
    from latentreason.generation import KVStepper

    pair = organism
    tok = pair.base_tokenizer
    ids, mask = left_pad([tok("  3+4*2=").input_ids, tok("3+4*2-7=").input_ids], tok.pad_token_id)
    a, b = KVStepper(pair.base_model, ids, mask), KVStepper(pair.base_model, ids, mask)
    la = a.forward(*a.feed(0))
    b.forward(*b.feed(0))
    b.rewind(ids.shape[1])
    assert torch.allclose(la, b.forward(*b.feed(0)), atol=1e-6)
    nxt = la.argmax(-1)
    la2 = a.forward(*a.feed(1, nxt))
    b.forward(*b.feed(1, nxt))
    b.rewind(1)
    assert torch.allclose(la2, b.forward(*b.feed(1, nxt)), atol=1e-6)
    assert torch.allclose(a.forward(*a.feed(2, la2.argmax(-1))), b.forward(*b.feed(2, la2.argmax(-1))), atol=1e-6)
