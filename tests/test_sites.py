"""Hook sites: recorded activations sit where their names say, bad sites raise, hooks never leak."""

from __future__ import annotations

import pytest
import torch

from latentreason.backends import get_backend
from latentreason.hooks import active_hooks, intervene, record
from latentreason.sites import HookSite, num_layers, parse_sites, resolve


def run_recorded(model, sites, ids):
    """Recorded activations and HF ``output_hidden_states`` from one forward pass."""
    with torch.no_grad():
        model(input_ids=ids[:, :1], output_hidden_states=True)  # transformers installs its own capture hooks on first use
    before = active_hooks(model)
    with torch.no_grad(), record(model, sites) as acts:
        out = model(input_ids=ids, output_hidden_states=True)
    assert active_hooks(model) == before
    return {k: v[0] for k, v in acts.items()}, out.hidden_states


def ids_for(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, (2, 9), generator=g)


def check_sites_match_hidden_states(model):
    n = num_layers(model)
    sites = [f"resid_pre.{l}" for l in range(n)] + [f"resid_post.{l}" for l in range(n - 1)]
    acts, hs = run_recorded(model, sites, ids_for(model))
    assert len(hs) == n + 1
    for l in range(n):
        assert torch.allclose(acts[f"resid_pre.{l}"], hs[l], atol=1e-6), f"resid_pre.{l}"
    for l in range(n - 1):  # HF normalises its last entry, so the final block is checked separately
        assert torch.allclose(acts[f"resid_post.{l}"], hs[l + 1], atol=1e-6), f"resid_post.{l}"


def test_resid_post_and_resid_pre_equal_output_hidden_states_on_tiny_models(tiny_model):
    check_sites_match_hidden_states(tiny_model)


def test_resid_post_and_resid_pre_equal_output_hidden_states_on_the_organism(organism):
    check_sites_match_hidden_states(organism.base_model)
    check_sites_match_hidden_states(organism.post_rl_model)


def test_resid_post_of_a_block_is_the_next_blocks_resid_pre_even_for_the_last_block(tiny_model):
    n = num_layers(tiny_model)
    acts, _ = run_recorded(tiny_model, [f"resid_post.{n - 2}", f"resid_pre.{n - 1}", f"resid_post.{n - 1}"], ids_for(tiny_model))
    assert torch.equal(acts[f"resid_post.{n - 2}"], acts[f"resid_pre.{n - 1}"])
    assert acts[f"resid_post.{n - 1}"].shape == acts[f"resid_pre.{n - 1}"].shape


def test_block_output_is_its_input_plus_attention_and_mlp_outputs(tiny_model):
    acts, _ = run_recorded(tiny_model, ["resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1"], ids_for(tiny_model))
    assert torch.allclose(acts["resid_pre.1"] + acts["attn_out.1"] + acts["mlp_out.1"], acts["resid_post.1"], atol=1e-5)


def test_hf_backend_returns_the_recorded_activations(tiny_model):
    ids = ids_for(tiny_model)
    got = get_backend("hf").activations(tiny_model, ids, torch.ones_like(ids), [HookSite.parse("resid_post.1")])
    acts, hs = run_recorded(tiny_model, ["resid_post.1"], ids)
    assert torch.allclose(got["resid_post.1"], hs[2], atol=1e-6)


def test_site_names_parse_in_both_spellings():
    assert HookSite.parse("resid_post.3") == HookSite("resid_post", 3) == HookSite.parse("blocks.3.hook_resid_post")
    assert HookSite.parse(" mlp_out.0 ").tl_name == "blocks.0.hook_mlp_out"
    assert str(HookSite.parse("blocks.2.hook_attn_out")) == "attn_out.2"
    assert [str(s) for s in parse_sites("resid_post.1, resid_pre.0")] == ["resid_post.1", "resid_pre.0"]


@pytest.mark.parametrize(
    "name, message",
    [("resid_mid.1", "Cannot parse hook site"), ("resid_post", "Cannot parse hook site"), ("resid_post.-1", "negative layer"), ("blocks.1.hook_resid_mid", "Cannot parse")],
)
def test_malformed_site_names_raise_value_errors(name, message):
    with pytest.raises(ValueError, match=message):
        HookSite.parse(name)


def test_no_site_at_all_is_refused():
    with pytest.raises(ValueError, match="No hook site given"):
        parse_sites(" , ")


def test_layer_out_of_range_names_the_valid_layers(tiny_model):
    with pytest.raises(ValueError, match="Unknown hook site 'resid_post.3': this model has layers 0–2"):
        resolve(tiny_model, "resid_post.3")


def test_unsupported_architecture_names_the_fix():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="Unsupported architecture None.*ARCHITECTURES"):
        resolve(model, "resid_post.0")


def test_a_bad_site_raises_before_any_hook_is_registered(make_tiny):
    model = make_tiny("qwen2")
    with pytest.raises(ValueError, match="layers 0–2"):
        with record(model, ["resid_post.0", "resid_post.7"]):
            pass
    assert active_hooks(model) == 0


def test_hooks_are_removed_when_the_forward_pass_raises(tiny_model):
    assert active_hooks(tiny_model) == 0
    bad = torch.tensor([[1, tiny_model.config.vocab_size + 5]])  # out-of-vocabulary id: the embedding raises
    with pytest.raises(IndexError):
        with record(tiny_model, ["resid_pre.0", "resid_post.1", "attn_out.2"]):
            assert active_hooks(tiny_model) == 3
            tiny_model(input_ids=bad)
    assert active_hooks(tiny_model) == 0


def test_hooks_are_removed_when_an_edit_function_raises(tiny_model):
    def boom(x):
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        with intervene(tiny_model, [("resid_post.1", boom)]):
            tiny_model(input_ids=ids_for(tiny_model))
    assert active_hooks(tiny_model) == 0


def test_nested_contexts_remove_only_their_own_hooks(tiny_model):
    with record(tiny_model, ["resid_post.0"]):
        with record(tiny_model, ["resid_post.1"]):
            assert active_hooks(tiny_model) == 2
        assert active_hooks(tiny_model) == 1
    assert active_hooks(tiny_model) == 0


def test_an_edit_at_a_site_changes_exactly_what_is_recorded_there(tiny_model):
    ids = ids_for(tiny_model)
    delta = torch.randn(tiny_model.config.hidden_size if hasattr(tiny_model.config, "hidden_size") else tiny_model.config.n_embd)
    with torch.no_grad(), record(tiny_model, ["resid_post.0", "resid_pre.1"]) as base:
        tiny_model(input_ids=ids)
    with torch.no_grad(), intervene(tiny_model, [("resid_post.0", lambda x: x + delta)]), record(tiny_model, ["resid_pre.1"]) as steered:
        tiny_model(input_ids=ids)
    assert torch.allclose(steered["resid_pre.1"][0], base["resid_pre.1"][0] + delta, atol=1e-5)


# ------------------------------------------------------------------ depth fractions and the LM head


def test_a_depth_fraction_names_the_floor_of_that_share_of_the_models_layers(make_tiny):
    from latentreason.sites import site_in, sites_in

    model = make_tiny("llama", layers=5)
    assert site_in(model, "resid_post@0.4") == HookSite("resid_post", 2)  # floor(0.4 * 5)
    assert site_in(model, "mlp_out@0") == HookSite("mlp_out", 0)
    assert site_in(model, "resid_pre@1") == HookSite("resid_pre", 4)  # at most the last layer
    assert site_in(model, "blocks.3.hook_resid_post") == HookSite("resid_post", 3)
    assert sites_in(model, "resid_post@0.4,resid_post.2,attn_out@0.9") == [HookSite("resid_post", 2), HookSite("attn_out", 4)]


@pytest.mark.parametrize("name", ["resid_post@1.5", "resid_post@-0.1", "resid_mid@0.4", "resid_post@", "resid_post@0.4x"])
def test_malformed_depth_fractions_name_both_spellings(name):
    from latentreason.sites import check_site_name

    with pytest.raises(ValueError, match=r"Cannot parse hook site.*depth fraction.*resid_post@0\.4"):
        check_site_name(name)


def test_a_named_layer_is_still_checked_against_the_model(make_tiny):
    from latentreason.sites import site_in

    with pytest.raises(ValueError, match="layers 0–2"):
        site_in(make_tiny("qwen2"), "resid_post.3")


def test_presets_and_the_command_line_share_one_depth_parser():
    import latentreason.presets as presets
    import latentreason.sites as sites

    assert not hasattr(presets, "_DEPTH_SITE")
    assert sites.is_depth_site("resid_post@0.4") and not sites.is_depth_site("resid_post.4")


def test_the_lm_head_applied_to_the_bodys_hidden_states_gives_the_models_logits(tiny_model):
    from latentreason.sites import lm_head_of

    ids = ids_for(tiny_model)
    body, head = lm_head_of(tiny_model)
    assert body is not tiny_model
    with torch.no_grad():
        full = tiny_model(input_ids=ids).logits
        h = body(input_ids=ids, use_cache=False).last_hidden_state
        torch.testing.assert_close(head(h), full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(head(h[0, 3:5]), full[0, 3:5], rtol=1e-5, atol=1e-5)  # rows gathered anywhere
