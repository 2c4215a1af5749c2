"""Cross-tokenizer co-decoding: the post-RL model reads the base model's text with its own tokenizer.

Oracles: the ids the post-RL model was fed equal a fresh tokenization of its prompt plus the base
completion so far, at every step; the router's input equals a fresh full forward there; alpha = 0
reproduces plain base decoding. Pairs: a random-weight Qwen2 base and Llama post-RL model with
byte-level BPE tokenizers trained separately (tests/_xtok_pairs.py).
"""

from __future__ import annotations

import dataclasses
import doctest

import pytest
import torch

import _xtok_pairs as P
from latentreason import xtok
from latentreason.generation import KVStepper, decode, left_pad
from latentreason.hooks import active_hooks, record
from latentreason.hybrid import HybridEngine
from latentreason.pair import ModelPair, ModelSpec
from latentreason.routers import NONE, OracleRouter, ProbeRouter
from latentreason.vectors import SteeringVector

SITE = "resid_post.2"
BASE_TEMPLATE = "Question: {prompt}\nAnswer: Let's think step by step.\n"
POST_TEMPLATE = "{prompt}\nPut your final answer within \\boxed{{}}."


def _pair(base_tok, post_tok, post_model) -> ModelPair:
    base_model = P.model_for(base_tok, "qwen2", hidden=32, layers=4, seed=0)
    return ModelPair(
        "tiny-xtok", "gsm8k", base_model, post_model, base_tok, post_tok,
        ModelSpec("base", BASE_TEMPLATE), ModelSpec("post_rl", POST_TEMPLATE, chat_template=True),
    )


@pytest.fixture(scope="module")
def tokenizers():
    return P.base_tokenizer(), P.post_rl_tokenizer()


@pytest.fixture(scope="module")
def setup(tokenizers):
    base_tok, post_tok = tokenizers
    pair = _pair(base_tok, post_tok, P.model_for(post_tok, "llama", hidden=48, layers=3, seed=1))
    g = torch.Generator().manual_seed(0)
    vectors = [SteeringVector(n, torch.randn(32, generator=g) * 3, SITE, "manual", pair.fingerprint("base")) for n in ("a", "b")]
    X = torch.randn(300, 48, generator=g)
    router = ProbeRouter(["a", "b"], SITE, threshold=0.4).fit(X, torch.arange(300) % 3 - 1, fingerprint=pair.fingerprint("post_rl"))
    prompts = [r["question"] for r in P.gsm8k_rows()[:5]]
    return pair, vectors, router, prompts


def _plain_base(pair, prompts, n, temperature=0.0, seed=0):
    tok = pair.base_tokenizer
    ids, mask = left_pad([tok(pair.format_prompt("base", p)).input_ids for p in prompts], tok.pad_token_id)
    return decode(pair.base_model, ids, mask, max_new_tokens=n, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temperature, seed=seed).completions(tok)


# ------------------------------------------------------------------ vocabularies and text


def test_vocab_relation_tells_same_compatible_and_different_tokenizers(tokenizers):
    base_tok, post_tok = tokenizers
    assert xtok.vocab_relation(base_tok, P.base_tokenizer()) == "same"
    assert xtok.vocab_relation(base_tok, post_tok) == "different"
    chat = P.base_tokenizer()
    chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})  # a distill's turn markers
    assert xtok.vocab_relation(base_tok, chat) == "compatible"
    clash = P.base_tokenizer()
    clash.add_tokens(["<think>"])  # a non-special added token the base model could write as text
    other = P.base_tokenizer()
    other.add_tokens(["</think>"])
    assert xtok.vocab_relation(clash, other) == "different"


def test_completion_text_decodes_whole_and_holds_back_an_incomplete_utf8_character(tokenizers):
    base_tok, _ = tokenizers
    first, second = base_tok.convert_tokens_to_ids(["Ã", "©"])  # the byte-level tokens of 0xC3 0xA9, "é"
    prefix = base_tok("caf", add_special_tokens=False).input_ids
    assert xtok.completion_text(base_tok, prefix + [first]) == "caf"
    assert xtok.completion_text(base_tok, prefix + [first, second]) == "café"
    assert "".join(base_tok.decode([t]) for t in prefix + [first, second]) != "café"  # token by token would be wrong
    assert xtok.completion_text(base_tok, prefix + [base_tok.eos_token_id]) == "caf"  # special tokens dropped


def test_module_examples_run():
    assert doctest.testmod(xtok).failed == 0


def test_common_prefix():
    assert xtok.common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert xtok.common_prefix([], [1]) == 0 and xtok.common_prefix([7, 8], [7, 8]) == 2


@torch.no_grad()
def test_kv_stepper_truncate_then_feed_tokens_equals_a_fresh_forward(make_tiny):
    model = make_tiny("llama")
    ids = torch.tensor([[5, 9, 3, 17, 8, 12, 30, 4]])
    fresh = model(input_ids=ids).logits[0, -1]
    st = KVStepper(model, ids[:, :6])
    st.forward(*st.feed(0))
    st.forward(*st.feed_tokens(torch.tensor([[40, 41]])))  # a detour that is then cut away
    assert st.length == 8
    st.truncate(3)  # cuts into the prompt too
    assert st.length == 3
    logits = st.forward(*st.feed_tokens(ids[:, 3:]))
    torch.testing.assert_close(logits[0], fresh, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="1..8"):
        st.truncate(0)


# ------------------------------------------------------------------ co-decoding


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
@torch.no_grad()
def test_post_rl_model_is_fed_its_own_tokenization_of_the_base_text_at_every_step(setup, temperature):
    pair, vectors, router, prompts = setup
    engine = HybridEngine(pair, vectors, router, alpha=2.0)
    steps: list[xtok.CrossStep] = []
    cr = xtok.cross_generate(engine, prompts, 20, temperature=temperature, seed=1, on_step=steps.append, details=True)
    res, base_tok, post_tok = cr.result, pair.base_tokenizer, pair.post_rl_tokenizer
    post_prompts = [post_tok(pair.format_prompt("post_rl", p)).input_ids for p in prompts]
    assert post_tok.convert_tokens_to_ids("<|user|>") in post_prompts[0]  # the post-RL chat template, in its own ids
    checked = 0
    for s in steps:
        for r in range(len(prompts)):
            if not bool(s.active[r]):
                continue
            text = xtok.completion_text(base_tok, res.tokens[r, : s.step].tolist())  # the base completion before this step
            want = post_prompts[r] + post_tok(text, add_special_tokens=False).input_ids
            assert s.texts[r] == text
            assert s.fed[r] == want, f"step {s.step}, row {r}"
            with record(pair.post_rl_model, [SITE]) as acts:
                pair.post_rl_model(input_ids=torch.tensor([want]))
            torch.testing.assert_close(s.acts[r], acts[SITE][0][0, -1], atol=1e-4, rtol=1e-4)
            checked += 1
    assert checked >= len(prompts) * 2
    for r in range(len(prompts)):  # after the loop, the last text was fed in full (held-back bytes aside)
        assert cr.post_rl_ids[r][: len(post_prompts[r])] == post_prompts[r]
    assert res.completions == [base_tok.decode(t[:n].tolist(), skip_special_tokens=True) for t, n in zip(res.tokens, res.lengths)]
    if temperature > 0:  # random bytes: re-tokenisation rewrote earlier tokens and held back partial characters
        stats = [cr.stats] + [xtok.cross_generate(engine, prompts, 20, temperature=temperature, seed=s, details=True).stats for s in range(2, 7)]
        assert any(st.rewound_tokens > 0 for st in stats) and any(st.reused_steps > 0 for st in stats)  # one seed's path may have none


def test_alpha_zero_cross_tokenizer_hybrid_equals_plain_base_greedy_decoding(setup):
    pair, vectors, router, prompts = setup
    engine = HybridEngine(pair, vectors, router, alpha=0.0)
    assert engine.feeding == "text"
    plain = _plain_base(pair, prompts, 20)
    assert engine.generate(prompts, max_new_tokens=20).completions == plain
    forced = HybridEngine(pair, vectors, router, alpha=0.0, force=1).generate(prompts, max_new_tokens=20)
    assert forced.completions == plain and forced.budget == 1.0
    assert HybridEngine(pair, vectors, router, alpha=0.0).generate(prompts, max_new_tokens=12, temperature=1.0, seed=4).completions == _plain_base(pair, prompts, 12, 1.0, 4)


def test_steering_changes_cross_tokenizer_generation_and_is_recorded(setup):
    pair, vectors, router, prompts = setup
    big = [dataclasses.replace(v, direction=v.direction * 30) for v in vectors]
    res = HybridEngine(pair, big, router, alpha=1.0, force=0).generate(prompts, max_new_tokens=16)
    assert res.completions != _plain_base(pair, prompts, 16)
    assert res.budget == 1.0 and all(name == "a" for _, name in res.steered(0))


def test_batch_size_does_not_change_greedy_cross_tokenizer_output(setup):
    pair, vectors, router, prompts = setup
    eng = HybridEngine(pair, vectors, router, alpha=3.0)
    a = eng.generate(prompts, max_new_tokens=16, batch_size=8)
    b = eng.generate(prompts, max_new_tokens=16, batch_size=2)
    assert a.completions == b.completions
    assert torch.equal(a.decisions[:, : b.decisions.shape[1]], b.decisions[:, : a.decisions.shape[1]])


@torch.no_grad()
def test_oracle_router_across_vocabularies_compares_the_post_rl_next_text_read_as_a_base_token(setup):
    pair, vectors, router, prompts = setup
    base_tok, post_tok = pair.base_tokenizer, pair.post_rl_tokenizer
    always = ProbeRouter(router.strategies, SITE, threshold=0.0)
    always.mean_, always.scale_, always.coef_, always.intercept_, always.fingerprint = router.mean_, router.scale_, router.coef_, router.intercept_, router.fingerprint
    seen = []

    class Recording(OracleRouter):
        def predict(self, X, ctx=None):
            out = super().predict(X, ctx)
            seen.append((ctx, out))
            return out

    steps: list[xtok.CrossStep] = []
    engine = HybridEngine(pair, vectors, Recording(always), alpha=1.0)
    res = xtok.cross_generate(engine, prompts, 12, temperature=1.0, seed=2, on_step=steps.append)
    assert res.is_oracle
    n_prompt = [len(post_tok(pair.format_prompt("post_rl", p)).input_ids) for p in prompts]
    disagreements = 0
    for s, (ctx, dec) in zip(steps, seen):
        for r in range(len(prompts)):
            if not bool(s.active[r]):
                continue
            g = int(pair.post_rl_model(input_ids=torch.tensor([s.fed[r]])).logits[0, -1].argmax())
            comp = s.fed[r][n_prompt[r] :]
            before, after = post_tok.decode(comp, skip_special_tokens=True), post_tok.decode(comp + [g], skip_special_tokens=True)
            text = after[len(before) :]
            if g == post_tok.eos_token_id:
                want = base_tok.eos_token_id
            elif text:
                want = base_tok(text, add_special_tokens=False).input_ids[0]
            else:
                want = int(ctx.base_logits[r].argmax())
            assert int(ctx.post_rl_logits[r].argmax()) == want
            disagree = int(ctx.base_logits[r].argmax()) != want
            disagreements += disagree
            assert (int(dec[r]) != NONE) == disagree
    assert disagreements > 0


def test_hooks_are_removed_after_cross_tokenizer_runs_even_when_the_router_raises(setup):
    pair, vectors, router, prompts = setup

    class Boom(ProbeRouter):
        def predict(self, X, ctx=None):
            raise RuntimeError("router failed")

    bad = Boom(router.strategies, SITE)
    bad.mean_, bad.scale_, bad.coef_, bad.intercept_ = router.mean_, router.scale_, router.coef_, router.intercept_
    with pytest.raises(RuntimeError, match="router failed"):
        HybridEngine(pair, vectors, bad, alpha=1.0).generate(prompts, max_new_tokens=4)
    HybridEngine(pair, vectors, router, alpha=1.0).generate(prompts, max_new_tokens=4)
    assert active_hooks(pair.base_model) == 0 and active_hooks(pair.post_rl_model) == 0


def test_compatible_tokenizers_take_the_batched_path_with_the_post_rl_tokenizer_for_its_prompts(tokenizers, monkeypatch):
    base_tok, _ = tokenizers
    post_tok = P.base_tokenizer()
    post_tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    post_tok.chat_template = P.CHAT_TEMPLATE
    post_model = P.model_for(post_tok, "llama", hidden=48, layers=3, seed=1)
    pair = _pair(base_tok, post_tok, post_model)
    g = torch.Generator().manual_seed(0)
    vectors = [SteeringVector("a", torch.randn(32, generator=g), SITE, "manual", pair.fingerprint("base"))]
    router = ProbeRouter(["a"], SITE, threshold=0.5).fit(torch.randn(100, 48, generator=g), torch.arange(100) % 2 - 1, fingerprint=pair.fingerprint("post_rl"))
    engine = HybridEngine(pair, vectors, router, alpha=0.0)
    assert engine.feeding == "ids"
    seen: list[torch.Tensor] = []
    import latentreason.hybrid as hybrid

    class Spy(KVStepper):
        def __init__(self, model, input_ids, attention_mask=None):
            seen.append(input_ids)
            super().__init__(model, input_ids, attention_mask)

    monkeypatch.setattr(hybrid, "KVStepper", Spy)
    prompts = [r["question"] for r in P.gsm8k_rows()[:3]]
    res = engine.generate(prompts, max_new_tokens=10)
    assert res.completions == _plain_base(pair, prompts, 10)
    user = post_tok.convert_tokens_to_ids("<|user|>")
    assert user >= len(base_tok) and bool((seen[1] == user).any())  # the chat marker exists only in the post-RL vocabulary


def test_feeding_mode_reads_text_when_base_ids_overflow_the_post_rl_embedding(tokenizers):
    base_tok, _ = tokenizers
    small = P.model_for(base_tok, "llama", hidden=48, layers=1, seed=2)
    small.resize_token_embeddings(100)
    pair = _pair(base_tok, P.base_tokenizer(), small)
    assert xtok.feeding_mode(pair) == "text"
    pair.post_rl_model = P.model_for(base_tok, "llama", hidden=48, layers=1, seed=2)
    assert xtok.feeding_mode(pair) == "ids"
