"""Tests for latentreason.steering: schedules, positions under KV caching and padding, checks, cleanup, the organism."""

from __future__ import annotations

import os

import pytest
import torch

from latentreason.fingerprint import model_fingerprint
from latentreason.generation import decode, left_pad
from latentreason.hooks import active_hooks, record
from latentreason.organism.evaluate import is_reasoning
from latentreason.steering import PositionNotReachedError, Schedule, check_alpha, generate_steered, steer, steered_decode
from latentreason.vectors import SteeringVector

SITE = "resid_post.1"
ROWS = [[1, 5, 6, 7, 8, 9], [1, 9, 10], [1, 11, 12, 13]]  # left-padded to width 6: pads 0, 3, 2


def make_vector(model, site: str = SITE, seed: int = 0, name: str = "v", fingerprint: str | None = None) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    return SteeringVector(name, torch.randn(d, generator=g), site, "manual", fingerprint or model_fingerprint(model))


def run(model, mode: str, ids, mask, n: int = 6):
    """Greedy generation by ``mode``: HF generate with / without KV cache, or our decode loop. Returns new tokens [batch, n]."""
    if mode == "decode":
        return decode(model, ids, mask, max_new_tokens=n, eos_token_id=-1, pad_token_id=0).tokens
    out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=mode == "hf_cache")
    return out[:, ids.shape[1] :]


MODES = ["hf_cache", "hf_nocache", "decode"]


@pytest.fixture
def qwen(make_tiny):
    return make_tiny("qwen2")


@pytest.fixture
def batch():
    return left_pad(ROWS, 0)


# ---------------------------------------------------------------- schedules and arguments


def test_schedule_parse_accepts_names_lists_masks_and_callbacks():
    assert Schedule.parse("all").kind == "all"
    assert Schedule.parse("first").steps == (0,)
    assert Schedule.parse("positions 3,4").positions == ((3, 4),)
    assert Schedule.parse("steps=0, 2").steps == (0, 2)
    assert Schedule.parse([1, 2]).positions == ((1, 2),)
    assert Schedule.parse([[1], [2, 3]]).positions == ((1,), (2, 3))
    assert Schedule.parse(torch.zeros(2, 3, dtype=torch.bool)).kind == "mask"
    assert Schedule.parse(lambda step, pos, h: None).kind == "callback"


@pytest.mark.parametrize("bad", ["everywhere", "positions -1", [1.5], object()])
def test_unknown_schedule_raises_value_error_naming_the_forms(bad):
    with pytest.raises(ValueError, match="schedule|Positions|integers"):
        Schedule.parse(bad)


@pytest.mark.parametrize("alpha", ["2", None, float("nan"), True, [1.0]])
def test_alpha_that_is_not_a_finite_number_raises(qwen, alpha):
    with pytest.raises(ValueError, match="not a finite number"):
        steer(qwen, [(make_vector(qwen), alpha)]).__enter__()
    assert check_alpha(2) == 2.0
    assert active_hooks(qwen) == 0


def test_vector_for_another_model_is_refused_unless_check_is_off(make_tiny, batch):
    model, other = make_tiny("qwen2", seed=0), make_tiny("qwen2", seed=1)
    vec = make_vector(other)
    with pytest.raises(ValueError, match="check=False"):
        steer(model, [(vec, 1.0)]).__enter__()
    with steer(model, [(vec, 1.0)], attention_mask=batch[1], check=False):
        model(input_ids=batch[0], attention_mask=batch[1])
    wide = SteeringVector("wide", torch.ones(48), SITE, "manual", model_fingerprint(model))
    with pytest.raises(ValueError, match="hidden size is 32"):
        steer(model, [(wide, 1.0)], check=False).__enter__()
    assert active_hooks(model) == 0


def test_unknown_site_raises_before_any_hook_is_registered(qwen):
    vec = make_vector(qwen, site="resid_post.7")
    with pytest.raises(ValueError, match="layers 0–2"):
        with steer(qwen, [(vec, 1.0)]):
            pass
    assert active_hooks(qwen) == 0


def test_right_padded_attention_mask_is_refused(qwen):
    ids = torch.tensor([[1, 5, 6], [1, 7, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        with steer(qwen, [(make_vector(qwen), 1.0)], attention_mask=mask):
            qwen(input_ids=ids, attention_mask=mask)


# ---------------------------------------------------------------- acceptance: identity, exact positions, cleanup


@pytest.mark.parametrize("mode", MODES)
def test_alpha_zero_gives_output_identical_to_unsteered(tiny_model, mode):
    ids, mask = left_pad(ROWS, 0)
    plain = run(tiny_model, mode, ids, mask)
    with steer(tiny_model, [(make_vector(tiny_model), 0.0)], at="all", attention_mask=mask):
        steered = run(tiny_model, mode, ids, mask)
    assert torch.equal(plain, steered)


@pytest.mark.parametrize("site", ["resid_post.1", "resid_pre.2"])
@pytest.mark.parametrize("mode", MODES)
def test_steering_absolute_positions_touches_exactly_those_positions(qwen, batch, mode, site):
    ids, mask = batch
    pads = (mask == 0).sum(1).tolist()
    vec, alpha, positions = make_vector(qwen, site=site), 3.0, [2, 4, 7]
    with record(qwen, [site]) as before, steer(qwen, [(vec, alpha)], at=positions, attention_mask=mask) as s, record(qwen, [site]) as after:
        run(qwen, mode, ids, mask, n=6)
    assert len(before[site]) == 6
    width = ids.shape[1]
    starts = [0] * 6 if mode == "hf_nocache" else [0] + [width + i - 1 for i in range(1, 6)]  # first column each forward fed
    for start, b_act, a_act in zip(starts, before[site], after[site]):
        diff = a_act - b_act
        touched = {tuple(x) for x in (diff.abs().sum(-1) > 0).nonzero().tolist()}
        expected = {(row, p + pad - start) for row, pad in enumerate(pads) for p in positions if start <= p + pad < start + b_act.shape[1]}
        assert touched == expected
        for row, col in touched:
            torch.testing.assert_close(diff[row, col], alpha * vec.direction)
    assert s.steered == [(r, p) for r in range(3) for p in positions]
    assert s.steered_mask.shape[0] == 3


@pytest.mark.parametrize("mode", MODES)
def test_hooks_are_removed_when_generation_raises(qwen, batch, mode):
    ids, mask = batch

    def boom(step, positions, hidden):
        if step == 2:
            raise RuntimeError("boom")
        return None

    assert active_hooks(qwen) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with steer(qwen, [(make_vector(qwen), 1.0, boom), (make_vector(qwen, site="resid_post.2"), 1.0)], attention_mask=mask):
            run(qwen, mode, ids, mask)
    assert active_hooks(qwen) == 0


def test_position_never_reached_raises_naming_it_and_removes_hooks(qwen, batch):
    ids, mask = batch
    with pytest.raises(PositionNotReachedError, match="row 1 position 9"):
        with steer(qwen, [(make_vector(qwen), 1.0)], at=[1, 9], attention_mask=mask):
            run(qwen, "decode", ids, mask, n=4)  # row 1 (3 real tokens) ends at length 7
    assert active_hooks(qwen) == 0
    with pytest.raises(PositionNotReachedError, match="row 0 position 15"):
        with steer(qwen, [(make_vector(qwen), 1.0)], at="steps 2, 10", attention_mask=mask):
            run(qwen, "decode", ids, mask, n=4)  # step 10 decides token 10 of 4
    with pytest.raises(PositionNotReachedError, match="position/step 3"):
        with steer(qwen, [(make_vector(qwen), 1.0)], at="positions 3"):
            pass  # no forward at all


# ---------------------------------------------------------------- each schedule


def test_prompt_generated_and_first_schedules_steer_the_expected_positions(qwen, batch):
    ids, mask = batch
    lens = mask.sum(1).tolist()  # 6, 3, 4
    kw = dict(max_new_tokens=4, eos_token_id=-1, pad_token_id=0)
    vec = make_vector(qwen)
    res = steered_decode(qwen, ids, mask, vectors=[(vec, 1.0)], at="prompt", **kw)
    assert res.steered == [(r, p) for r, n in enumerate(lens) for p in range(n)]
    res = steered_decode(qwen, ids, mask, vectors=[(vec, 1.0)], at="generated", **kw)
    assert res.steered == [(r, p) for r, n in enumerate(lens) for p in range(n, n + 3)]  # 4 forwards: the last token is never fed
    res = steered_decode(qwen, ids, mask, vectors=[(vec, 1.0)], at="all", **kw)
    assert res.steered == [(r, p) for r, n in enumerate(lens) for p in range(n + 3)]
    res = steered_decode(qwen, ids, mask, vectors=[(vec, 1.0)], at="first", **kw)
    assert res.steered == [(r, n - 1) for r, n in enumerate(lens)]
    assert res.steering.steered_steps() == [[0], [0], [0]]


def test_mask_schedule_steers_each_rows_chosen_steps(qwen, batch):
    ids, mask = batch
    lens = mask.sum(1).tolist()
    steps = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    res = steered_decode(qwen, ids, mask, vectors=[(make_vector(qwen), 1.0)], at=steps, max_new_tokens=4, eos_token_id=-1, pad_token_id=0)
    assert res.steered == [(0, lens[0] - 1), (0, lens[0] + 2), (1, lens[1])]
    assert res.steering.steered_steps() == [[0, 3], [1], []]


@pytest.mark.parametrize("mode", MODES)
def test_callback_schedule_sees_absolute_positions_and_steers_what_it_returns(qwen, batch, mode):
    ids, mask = batch
    seen: list[tuple[int, list[list[int]]]] = []

    def odd_positions(step, positions, hidden):
        seen.append((step, positions.tolist()))
        assert hidden.shape[:2] == positions.shape
        return (positions % 2 == 1) & (positions >= 0)

    with steer(qwen, [(make_vector(qwen), 2.0, odd_positions)], attention_mask=mask) as s:
        out = run(qwen, mode, ids, mask, n=5)
    lens = mask.sum(1).tolist()
    assert seen[0] == (0, [[c - pad for c in range(6)] for pad in (0, 3, 2)])
    assert [st for st, _ in seen] == list(range(5))
    assert seen[1][1] == [[n] for n in lens]  # only new tokens are asked about, even without a KV cache
    assert s.steered == [(r, p) for r, n in enumerate(lens) for p in range(n + 4) if p % 2 == 1]
    with steer(qwen, [(make_vector(qwen), 2.0, odd_positions)], attention_mask=mask):
        reference = run(qwen, "hf_cache", ids, mask, n=5)
    assert torch.equal(out, reference)


def test_several_vectors_each_with_their_own_alpha_site_and_schedule(qwen, batch):
    ids, mask = batch
    lens = mask.sum(1).tolist()
    a, b, c = make_vector(qwen, name="a"), make_vector(qwen, site="resid_post.2", seed=1, name="b"), make_vector(qwen, seed=2, name="c")
    with record(qwen, [SITE, "resid_post.2"]) as before, steer(qwen, [(a, 1.0, "first"), (b, -2.0, "generated"), (c, 0.5, [0])], attention_mask=mask) as s, record(qwen, [SITE, "resid_post.2"]) as after:
        qwen(input_ids=ids, attention_mask=mask)
    assert s.steered_by(0).nonzero().tolist() == [[r, n - 1] for r, n in enumerate(lens)]
    assert s.steered_by(1).sum() == 0
    assert s.steered_by(2).nonzero().tolist() == [[0, 0], [1, 0], [2, 0]]
    diff = after[SITE][0] - before[SITE][0]
    torch.testing.assert_close(diff[0, 5], a.direction)
    torch.testing.assert_close(diff[1, 3], 0.5 * c.direction)
    assert torch.equal(after["resid_post.2"][0], before["resid_post.2"][0])


def test_steered_decode_matches_hf_generate_and_reports_steered_positions(tiny_model):
    ids, mask = left_pad(ROWS, 0)
    vec = make_vector(tiny_model)
    res = steered_decode(tiny_model, ids, mask, vectors=[(vec, 4.0)], at="generated", max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    out, s = generate_steered(tiny_model, ids, mask, vectors=[(vec, 4.0)], at="generated", max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(res.tokens, out[:, ids.shape[1] :])
    assert res.steered == s.steered
    plain = decode(tiny_model, ids, mask, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    assert not torch.equal(plain.tokens, res.tokens)  # alpha 4 along a random direction changes the greedy tokens


def test_vector_apply_delegates_to_steer_and_edit_is_not_in_place(qwen, batch):
    ids, mask = batch
    vec = make_vector(qwen)
    with record(qwen, [SITE]) as before, vec.apply(qwen, alpha=1.5, at="prompt", attention_mask=mask) as s:
        qwen(input_ids=ids, attention_mask=mask)
    with record(qwen, [SITE]) as plain:
        qwen(input_ids=ids, attention_mask=mask)
    assert torch.equal(before[SITE][0], plain[SITE][0])  # the hook's input tensor was left untouched
    assert len(s.steered) == sum(len(r) for r in ROWS)


def test_one_context_runs_one_generation_unless_reset(qwen, batch):
    ids, mask = batch
    with steer(qwen, [(make_vector(qwen), 1.0)], at="first", attention_mask=mask) as s:
        run(qwen, "decode", ids, mask, n=2)
        with pytest.raises(ValueError, match="reset"):
            qwen(input_ids=ids[:1])
        s.reset(mask[:2])
        run(qwen, "decode", ids[:2], mask[:2], n=2)
    assert s.steered == [(0, 5), (1, 2)]
    assert active_hooks(qwen) == 0


# ---------------------------------------------------------------- the organism


@pytest.fixture(scope="module")
def pair(request):
    spec = os.environ.get("LATENTREASON_TEST_PAIR")  # e.g. a freshly trained pair directory
    if spec:
        from latentreason.pair import load_pair

        return load_pair(spec)
    return request.getfixturevalue("organism")


@pytest.fixture(scope="module")
def step(pair):
    from _vectors import step_vector

    return step_vector(pair)




def test_steered_greedy_run_on_the_organism_is_the_same_with_batch_1_and_16(pair, step):
    from _vectors import organism_task

    task, tok = organism_task(pair), pair.base_tokenizer
    problems = task.sample("test", 16, seed=3)
    ids = tok([task.prompt(p) for p in problems], return_tensors="pt").input_ids
    from _vectors import STEP_ALPHA

    kw = dict(vectors=[(step, STEP_ALPHA)], at="first", max_new_tokens=48, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    batched = steered_decode(pair.base_model, ids, **kw).completions(tok)
    single = [steered_decode(pair.base_model, ids[i : i + 1], **kw).completions(tok)[0] for i in range(len(problems))]
    assert batched == single
    assert sum(is_reasoning(c) for c in batched) >= 12


def test_step_vector_at_the_first_step_makes_the_base_model_reason(pair, step):
    """Acceptance: greedy reasoning rate <= 10% unsteered, >= 80% with the step vector at step 0."""
    from _vectors import organism_task

    task, tok = organism_task(pair), pair.base_tokenizer
    problems = task.sample("test", 100, seed=0)
    ids = tok([task.prompt(p) for p in problems], return_tensors="pt").input_ids
    kw = dict(max_new_tokens=int(pair.defaults.get("max_new_tokens", 96)), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    plain = decode(pair.base_model, ids, **kw).completions(tok)
    from _vectors import STEP_ALPHA

    from latentreason.tasks.arith import MARKER_OF, STRATEGY_OF_OP

    steered = steered_decode(pair.base_model, ids, vectors=[(step, STEP_ALPHA)], at="first", **kw)
    rate = lambda cs: sum(is_reasoning(c) for c in cs) / len(cs)  # noqa: E731
    assert rate(plain) <= 0.10
    assert rate(steered.completions(tok)) >= 0.80
    right = [c.startswith(MARKER_OF[STRATEGY_OF_OP[p.ops[0]]] + ":") for p, c in zip(problems, steered.completions(tok))]
    assert sum(right) >= 80  # pushed to work, the base itself picks the first operation's strategy
    assert steered.steering.steered_steps() == [[0]] * len(problems)
