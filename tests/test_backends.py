"""Backends agree: HF hooks, the TransformerLens bridge and nnsight read the same activations,
which equal HF ``output_hidden_states``; the bridge's KV-cached greedy generation equals HF's
(guards the transformers<5.24 pin); remote (NDIF) stops at a clear error before any network."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import torch
from conftest import _tiny

from latentreason.backends import BACKENDS, HFBackend, NNsightBackend, TransformerLensBackend, get_backend, nnsight_view, tl_view
from latentreason.generation import decode, left_pad
from latentreason.hooks import active_hooks
from latentreason.organism.tokenizer import build_tokenizer
from latentreason.sites import KINDS, num_layers
from latentreason.tasks.arith import ArithTask

ARCHS = ["qwen2", "llama", "gpt2", "organism"]
TOL = 1e-5
DEV_PAIR = Path("/tmp/exp/o1")
FAKE_KEY = "ndif-test-key-SECRET-7f3a"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def char_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def organism_pair():
    from latentreason.pair import load_pair

    if (DEV_PAIR / "pair.json").exists():
        return load_pair(DEV_PAIR)
    try:
        from latentreason.organism import load_default

        return load_default()
    except FileNotFoundError:
        pytest.skip(f"no organism pair: neither {DEV_PAIR} nor the shipped default exists yet")


@pytest.fixture(scope="module")
def tiny_models(char_tokenizer):
    return {arch: _tiny(arch, vocab=len(char_tokenizer)) for arch in ("qwen2", "llama", "gpt2")}


@pytest.fixture(scope="module")
def model_and_tokenizer(request, tiny_models, char_tokenizer):
    def get(arch: str):
        if arch == "organism":
            pair = request.getfixturevalue("organism_pair")
            return pair.base_model, pair.base_tokenizer
        return tiny_models[arch], char_tokenizer

    return get


@pytest.fixture(scope="module")
def backends():
    """One instance of each backend for the module, so bridges and nnsight wrappers are booted once per model."""
    return {name: get_backend(name) for name in BACKENDS}


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def all_sites(model) -> list[str]:
    return [f"{kind}.{layer}" for layer in range(num_layers(model)) for kind in KINDS]


def batch_of(tokenizer, texts: list[str], side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = left_pad([tokenizer(t).input_ids for t in texts], tokenizer.pad_token_id)
    if side == "right":  # roll each row's real tokens to the front (what the activation cache does)
        for row in range(len(texts)):
            shift = int((mask[row] == 0).sum())
            ids[row], mask[row] = ids[row].roll(-shift), mask[row].roll(-shift)
    return ids, mask


TEXTS = ["  12+7*3=S:1+2=3\n", "4-4=", "98*1+6-5=S:9*8=2"]


# -- activations ------------------------------------------------------------------------------


def test_get_backend_covers_all_three_names():
    assert isinstance(get_backend(), HFBackend)
    assert isinstance(get_backend("hf"), HFBackend)
    assert isinstance(get_backend("transformer_lens"), TransformerLensBackend)
    assert isinstance(get_backend("nnsight"), NNsightBackend)
    assert get_backend("nnsight", remote=True).remote is True
    assert {get_backend(n).name for n in BACKENDS} == set(BACKENDS)


def test_get_backend_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="Unknown backend 'tl'.*'transformer_lens'"):
        get_backend("tl")
    with pytest.raises(TypeError, match="'hf' does not take 'remote'"):
        get_backend("hf", remote=True)
    with pytest.raises(ValueError, match="remote='yes'"):
        get_backend("nnsight", remote="yes")


@pytest.mark.parametrize("arch", ARCHS)
def test_backends_agree_at_every_site_kind(arch, model_and_tokenizer, backends):
    model, tok = model_and_tokenizer(arch)
    ids = tok(TEXTS[0], return_tensors="pt").input_ids
    sites = all_sites(model)
    acts = {name: b.activations(model, ids, None, sites) for name, b in backends.items()}
    for name in ("transformer_lens", "nnsight"):
        assert set(acts[name]) == set(sites)
        for site in sites:
            assert acts[name][site].shape == (1, ids.shape[1], model.config.hidden_size)
            assert rel_err(acts["hf"][site], acts[name][site]) < TOL, (name, site)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_backend_matches_hf_output_hidden_states(arch, model_and_tokenizer, backends):
    model, tok = model_and_tokenizer(arch)
    ids = tok(TEXTS[2], return_tensors="pt").input_ids
    n = num_layers(model)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states  # n + 1 entries; the last is normed
    sites = [f"resid_pre.{layer}" for layer in range(n)] + [f"resid_post.{layer}" for layer in range(n - 1)]
    for name, backend in backends.items():
        acts = backend.activations(model, ids, None, sites)
        for layer in range(n):
            assert rel_err(hidden[layer], acts[f"resid_pre.{layer}"]) < TOL, (name, layer)
        for layer in range(n - 1):
            assert rel_err(hidden[layer + 1], acts[f"resid_post.{layer}"]) < TOL, (name, layer)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("arch", ARCHS)
def test_padded_batch_matches_unbatched_rows_on_every_backend(arch, side, model_and_tokenizer, backends):
    model, tok = model_and_tokenizer(arch)
    ids, mask = batch_of(tok, TEXTS, side)
    sites = ["resid_pre.0", "attn_out.1", "mlp_out.1", f"resid_post.{num_layers(model) - 1}"]
    batched = {name: b.activations(model, ids, mask, sites) for name, b in backends.items()}
    for row, text in enumerate(TEXTS):
        one = tok(text, return_tensors="pt").input_ids
        real = mask[row].bool()
        for name, backend in backends.items():
            alone = backend.activations(model, one, None, sites)
            for site in sites:
                got = batched[name][site][row]
                assert rel_err(alone[site][0], got[real]) < TOL, (name, row, site)
                assert torch.equal(got[~real], torch.zeros_like(got[~real])), "padding positions must be zero"


def test_unknown_site_raises_before_running(tiny_models, backends, char_tokenizer):
    model = tiny_models["qwen2"]
    ids = char_tokenizer("1+2=", return_tensors="pt").input_ids
    for backend in backends.values():
        with pytest.raises(ValueError, match="layers 0–2"):
            backend.activations(model, ids, None, ["resid_post.9"])
        with pytest.raises(ValueError, match="Cannot parse hook site"):
            backend.activations(model, ids, None, ["resid_psot.1"])


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_views_leave_the_model_untouched(arch, char_tokenizer):
    model = _tiny(arch, vocab=len(char_tokenizer))
    ids = char_tokenizer(TEXTS[0], return_tensors="pt").input_ids
    types = {name: type(m) for name, m in model.named_modules()}
    patched = {name for name, m in model.named_modules() if "forward" in vars(m)}
    attn_implementation = model.config._attn_implementation
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        before = model(input_ids=ids).logits
    bridge = tl_view(model, char_tokenizer)
    view = nnsight_view(model, char_tokenizer)
    for backend in (TransformerLensBackend(), NNsightBackend()):
        backend.activations(model, ids, None, ["resid_post.1"])
    assert {name: type(m) for name, m in model.named_modules()} == types
    assert model.config._attn_implementation == attn_implementation, "TransformerLens forces eager attention on what it wraps"
    assert active_hooks(model) == 0
    assert {name for name, m in model.named_modules() if "forward" in vars(m)} == patched, "a library patched a forward on the model"
    assert all(torch.equal(p, params[name]) for name, p in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    # ... while the views share its weights rather than copying them
    assert {id(p) for p in model.parameters()} <= {id(p) for p in bridge.original_model.parameters()}
    assert {id(p) for p in view._module.parameters()} == {id(p) for p in model.parameters()}


def test_cached_views_follow_weight_updates_and_dtype_moves(char_tokenizer):
    model = _tiny("gpt2", vocab=len(char_tokenizer))
    ids = char_tokenizer(TEXTS[2], return_tensors="pt").input_ids
    sites = ["attn_out.0", "resid_post.2"]
    cached = [TransformerLensBackend(), NNsightBackend()]
    for backend in cached:
        backend.activations(model, ids, None, sites)  # boot and cache the views
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.mul_(1.5)  # an in-place update, as an optimizer step makes
    model.double()  # moves every tensor: the cached views must be rebuilt
    ref = HFBackend().activations(model, ids, None, sites)
    for backend in cached:
        got = backend.activations(model, ids, None, sites)
        assert all(got[s].dtype == torch.float64 and rel_err(ref[s], got[s]) < 1e-10 for s in sites), backend


def test_tl_view_speaks_transformer_lens_hook_names(organism_pair, backends):
    model, tok = organism_pair.base_model, organism_pair.base_tokenizer
    bridge = tl_view(model, tok)
    text = ArithTask().prompt(ArithTask().sample("dev", 1)[0])
    ids = tok(text, return_tensors="pt").input_ids
    _, cache = bridge.run_with_cache(ids, names_filter=["blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"])
    acts = backends["hf"].activations(model, ids, None, ["resid_post.1", "mlp_out.2"])
    assert rel_err(acts["resid_post.1"], cache["blocks.1.hook_resid_post"]) < TOL
    assert rel_err(acts["mlp_out.2"], cache["blocks.2.hook_mlp_out"]) < TOL
    assert bridge.to_tokens(text).tolist() == ids.tolist(), "string input must tokenize as the pair's tokenizer does"
    assert tok.padding_side == "left" and bridge.tokenizer is not tok


def test_tl_view_refuses_weight_processing_that_would_rewrite_the_shared_model(tiny_models, char_tokenizer):
    model = tiny_models["llama"]
    bridge = tl_view(model, char_tokenizer)
    with pytest.raises(RuntimeError, match="shares the Hugging Face model's weights"):
        bridge.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(RuntimeError, match="shares the Hugging Face model's weights"):
        bridge.process_weights()


def test_tl_view_needs_a_tokenizer(tiny_models):
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        tl_view(tiny_models["qwen2"], None)


def test_nnsight_view_traces_the_hf_module_tree(tiny_models, char_tokenizer, backends):
    model = tiny_models["gpt2"]
    view = nnsight_view(model, char_tokenizer)
    ids = char_tokenizer(TEXTS[1], return_tensors="pt").input_ids
    with torch.no_grad(), view.trace(ids):
        h = view.transformer.h[1].output.save()
    ref = backends["hf"].activations(model, ids, None, ["resid_post.1"])["resid_post.1"]
    assert rel_err(ref, h[0] if isinstance(h, tuple) else h) < TOL


# -- generation -------------------------------------------------------------------------------


def _until_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("role", ["base", "post_rl"])
def test_bridge_greedy_generation_equals_hf_and_decode(role, organism_pair):
    """Guards the transformers pin: 5.24 silently breaks the bridge's KV-cached generation."""
    model, tok = organism_pair.model(role), organism_pair.tokenizer(role)
    bridge = tl_view(model, tok)
    task, n_new = ArithTask(), 40
    prompts = [organism_pair.format_prompt(role, task.prompt(p)) for p in task.sample("dev", 3, seed=1)]
    prompts.append(prompts[0].strip())  # a shorter prompt, so the batch needs left padding
    ids, mask = batch_of(tok, prompts)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    with torch.no_grad():
        hf = model.generate(ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False, eos_token_id=eos, pad_token_id=pad)[:, ids.shape[1]:]
        ours = decode(model, ids, mask, max_new_tokens=n_new, eos_token_id=eos, pad_token_id=pad)
        tl_batch = bridge.generate(ids, attention_mask=mask, max_new_tokens=n_new, do_sample=False, use_past_kv_cache=True, eos_token_id=eos, return_type="tokens", verbose=False)
    tl_batch = tl_batch[:, ids.shape[1]:]
    lengths = []
    for row, prompt in enumerate(prompts):
        one = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            tl_one = bridge.generate(one, max_new_tokens=n_new, do_sample=False, use_past_kv_cache=True, eos_token_id=eos, return_type="tokens", verbose=False)[0, one.shape[1]:]
        want = _until_eos(hf[row].tolist(), eos)
        lengths.append(len(want))
        assert _until_eos(tl_one.tolist(), eos) == want, f"bridge (KV cache) diverged from HF greedy on {prompt!r}"
        assert _until_eos(tl_batch[row].tolist(), eos) == want, f"bridge batched generation diverged on {prompt!r}"
        assert ours.tokens[row, : ours.lengths[row]].tolist() == want, f"decode diverged from HF greedy on {prompt!r}"
    assert max(lengths) >= 5, f"generations too short ({lengths}) to exercise the KV cache"


# -- remote (NDIF): everything up to the first network call -------------------------------------


def test_remote_without_a_key_raises_before_any_network(monkeypatch, no_network):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    model = _tiny("qwen2")
    model.name_or_path = "Qwen/Qwen2-0.5B"  # what from_pretrained sets, and what nnsight keys remote runs on
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(RuntimeError, match="NDIF_API_KEY"):
        get_backend("nnsight", remote=True).activations(model, ids, None, ["resid_post.1"])
    with pytest.raises(RuntimeError, match="NDIF_API_KEY"):
        nnsight_view("meta-llama/Llama-3.1-8B", None, remote=True)


def test_remote_needs_a_hub_checkpoint(monkeypatch, no_network, char_tokenizer, tmp_path):
    monkeypatch.setenv("NDIF_API_KEY", FAKE_KEY)
    model = _tiny("llama", vocab=len(char_tokenizer))
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match="has no Hub id"):
        get_backend("nnsight", remote=True).activations(model, ids, None, ["resid_post.1"])
    model.name_or_path = str(tmp_path)
    with pytest.raises(ValueError, match="not a Hub id"):
        nnsight_view(model, char_tokenizer, remote=True)


def test_remote_configures_the_key_from_env_and_never_shows_it(monkeypatch, no_network, caplog, capsys, char_tokenizer):
    import nnsight
    from nnsight.modeling.transformers import TransformersModel

    monkeypatch.setenv("NDIF_API_KEY", FAKE_KEY)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    model = _tiny("qwen2", vocab=len(char_tokenizer))
    model.name_or_path = "Qwen/Qwen2-0.5B"  # what from_pretrained sets, and what nnsight keys remote runs on
    seen = {}

    class NetworkWouldStart(Exception):
        pass

    def fake_trace(self, *inputs, **kwargs):
        seen.update(kwargs, api_key=nnsight.CONFIG.API.APIKEY)
        raise NetworkWouldStart

    monkeypatch.setattr(TransformersModel, "trace", fake_trace)
    backend = get_backend("nnsight", remote=True)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NetworkWouldStart):
        backend.activations(model, torch.tensor([[1, 5, 6]]), None, ["resid_post.1"])
    assert seen["remote"] is True and seen["api_key"] == FAKE_KEY
    out = capsys.readouterr()
    shown = caplog.text + out.out + out.err + repr(backend) + str(vars(backend))
    assert FAKE_KEY not in shown


def test_remote_local_dry_run_matches_hf(tiny_models, char_tokenizer, backends):
    """nnsight's 'local' remote mode serialises the trace as NDIF would and runs it here."""
    model = tiny_models["llama"]
    ids, mask = batch_of(char_tokenizer, TEXTS[:2])
    sites = ["resid_pre.1", "attn_out.1", "resid_post.2"]
    got = NNsightBackend(remote="local").activations(model, ids, mask, sites)
    ref = backends["hf"].activations(model, ids, mask, sites)
    assert all(rel_err(ref[s], got[s]) < TOL for s in sites)
