"""Hook sites: the one definition of *where* in a model we read and write activations.

A site is a kind and a layer, written ``resid_post.3`` (TransformerLens spelling
``blocks.3.hook_resid_post`` is accepted too):

* ``resid_pre.L``  — the residual stream entering decoder block L   ``[batch, pos, d_model]``
* ``resid_post.L`` — the residual stream leaving decoder block L    ``[batch, pos, d_model]``
* ``attn_out.L``   — block L's attention output, before it is added ``[batch, pos, d_model]``
* ``mlp_out.L``    — block L's MLP output, before it is added       ``[batch, pos, d_model]``

``resid_post.L`` equals HF ``output_hidden_states[L + 1]`` for every block but the last
(HF applies the final norm to its last entry). Caching, vector training, steering and
routing all resolve sites here, so a vector is applied where it was trained.

Where a model is at hand, a site may also be given as a *depth fraction*, ``resid_post@0.4``:
layer ``floor(0.4 * num_layers)`` of that model (at most the last). :func:`site_in` turns either
spelling into a :class:`HookSite` of a model, and :func:`check_site_name` checks the spelling
before any model is loaded; presets and every command that takes ``--site`` / ``--sites`` use them.

:func:`lm_head_of` splits a causal LM into its body (ids -> final hidden states) and its LM
head, so a loss can apply the head only at the positions it scores.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")

# model_type -> (path of the decoder block list, attention submodule, MLP submodule)
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "qwen2": ("model.layers", "self_attn", "mlp"),
    "qwen3": ("model.layers", "self_attn", "mlp"),
    "llama": ("model.layers", "self_attn", "mlp"),
    "mistral": ("model.layers", "self_attn", "mlp"),
    "gemma": ("model.layers", "self_attn", "mlp"),
    "gemma2": ("model.layers", "self_attn", "mlp"),
    "phi3": ("model.layers", "self_attn", "mlp"),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
}

_SHORT = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out)\.(-?\d+)$")
_TL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")
DEPTH_SITE = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out)@(0(?:\.\d+)?|1(?:\.0+)?)$")  # resid_post@0.4: a fraction of a model's depth


@dataclass(frozen=True, order=True)
class HookSite:
    """A named place in a decoder: ``HookSite("resid_post", 3)`` is ``resid_post.3``."""

    kind: str
    layer: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown hook site kind {self.kind!r}: expected one of {', '.join(KINDS)}.")
        if not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"Hook site layer must be a non-negative integer, got {self.layer!r}.")

    @classmethod
    def parse(cls, name: str | HookSite) -> HookSite:
        """Parse ``resid_post.3`` or ``blocks.3.hook_resid_post``."""
        if isinstance(name, HookSite):
            return name
        s = str(name).strip()
        if m := _SHORT.match(s):
            layer = int(m.group(2))
            if layer < 0:
                raise ValueError(f"Hook site {s!r} has a negative layer; layers count from 0.")
            return cls(m.group(1), layer)
        if m := _TL.match(s):
            return cls(m.group(2), int(m.group(1)))
        raise ValueError(f"Cannot parse hook site {s!r}: write e.g. 'resid_post.3' (kinds: {', '.join(KINDS)}).")

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"

    @property
    def tl_name(self) -> str:
        """TransformerLens hook name of this site."""
        return f"blocks.{self.layer}.hook_{self.kind}"


def parse_sites(spec: str | list[str] | tuple[str, ...]) -> list[HookSite]:
    """Parse ``"resid_post.1,resid_post.2"`` or a list of names."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    sites = [HookSite.parse(n) for n in names if str(n).strip()]
    if not sites:
        raise ValueError("No hook site given: pass e.g. --sites resid_post.2")
    return sites


def is_depth_site(name: str | HookSite) -> bool:
    """Whether ``name`` is a depth fraction such as ``resid_post@0.4`` (resolved against a model by :func:`site_in`)."""
    return isinstance(name, str) and DEPTH_SITE.match(name.strip()) is not None


def check_site_name(name: str | HookSite) -> str:
    """``name`` stripped, if it is a site (``resid_post.11``, ``blocks.11.hook_resid_post``) or a depth
    fraction (``resid_post@0.4``); else a ValueError naming both spellings. Needs no model."""
    if isinstance(name, HookSite):
        return str(name)
    s = str(name).strip()
    if is_depth_site(s):
        return s
    try:
        HookSite.parse(s)
    except ValueError as e:
        raise ValueError(f"{e} Or give a depth fraction of the model, e.g. 'resid_post@0.4' (layer floor(0.4 * num_layers)).") from None
    return s


def split_site_names(spec: str | Sequence[str | HookSite]) -> list[str]:
    """``"resid_post.1,resid_post@0.5"`` (or a list) as checked names, in order, without duplicates."""
    names = spec.split(",") if isinstance(spec, str) else [str(n) for n in spec]
    out = list(dict.fromkeys(check_site_name(n) for n in names if str(n).strip()))
    if not out:
        raise ValueError("No hook site given: pass e.g. --sites resid_post.2 or --sites resid_post@0.4")
    return out


def layer_at_depth(fraction: float, n_layers: int) -> int:
    """The layer a depth fraction names: ``floor(fraction * n_layers)``, at most the last layer."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"Depth fraction {fraction} must be in [0, 1].")
    return min(n_layers - 1, math.floor(fraction * n_layers))


def site_at_depth(name: str | HookSite, n_layers: int) -> HookSite:
    """``name`` as a :class:`HookSite`, a depth fraction resolved for a model with ``n_layers`` blocks (no layer check)."""
    if isinstance(name, HookSite):
        return name
    s = check_site_name(name)
    if m := DEPTH_SITE.match(s):
        return HookSite(m.group(1), layer_at_depth(float(m.group(2)), n_layers))
    return HookSite.parse(s)


def site_in(model: torch.nn.Module, name: str | HookSite) -> HookSite:
    """The site ``name`` names in ``model``: ``resid_post.3`` as is, ``resid_post@0.4`` as layer
    ``floor(0.4 * num_layers(model))``; raises if the layer does not exist there.

    Example:
        >>> site_in(model, "resid_post@0.4")  # doctest: +SKIP
        HookSite(kind='resid_post', layer=12)
    """
    site = site_at_depth(name, num_layers(model)) if is_depth_site(name) else HookSite.parse(check_site_name(name))
    resolve(model, site)
    return site


def sites_in(model: torch.nn.Module, spec: str | Sequence[str | HookSite]) -> list[HookSite]:
    """:func:`site_in` for each of ``"resid_post.1,resid_post@0.5"`` (or a list), duplicates dropped."""
    return list(dict.fromkeys(site_in(model, n) for n in split_site_names(spec)))


def _get(module: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def architecture_of(model: torch.nn.Module) -> tuple[str, str, str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(f"Unsupported architecture {model_type!r}: latentreason knows {', '.join(sorted(ARCHITECTURES))}. Add it to latentreason.sites.ARCHITECTURES.")
    return ARCHITECTURES[model_type]


def num_layers(model: torch.nn.Module) -> int:
    blocks, _, _ = architecture_of(model)
    return len(_get(model, blocks))


def check_layer(site: str | HookSite, n_layers: int) -> HookSite:
    """``site`` parsed, if its layer exists in a model of ``n_layers`` blocks; else the one error message for a bad layer."""
    site = HookSite.parse(site)
    if site.layer >= n_layers:
        raise ValueError(f"Unknown hook site '{site}': this model has layers 0–{n_layers - 1}.")
    return site


@dataclass(frozen=True)
class ResolvedSite:
    """A site bound to a module: ``pre`` hooks read the module's input, others its output."""

    site: HookSite
    module: torch.nn.Module
    pre: bool


def resolve(model: torch.nn.Module, site: str | HookSite) -> ResolvedSite:
    """Bind a site to the module of ``model`` that carries it; raises on an unknown site or layer."""
    site = HookSite.parse(site)
    blocks_path, attn, mlp = architecture_of(model)
    blocks = _get(model, blocks_path)
    check_layer(site, len(blocks))
    block = blocks[site.layer]
    if site.kind == "resid_pre":
        return ResolvedSite(site, block, pre=True)
    if site.kind == "resid_post":
        return ResolvedSite(site, block, pre=False)
    return ResolvedSite(site, _get(block, attn if site.kind == "attn_out" else mlp), pre=False)


def lm_head_of(model: torch.nn.Module) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """``(body, head)`` of a Hugging Face causal LM: ``head(body(input_ids=ids).last_hidden_state)``
    equals ``model(input_ids=ids).logits``.

    ``body`` is the decoder without its LM head (``model.base_model``: the blocks and the final
    norm, so hook sites resolve inside it); ``head`` maps final hidden states ``[..., d_model]``
    to logits ``[..., vocab]`` (the output embedding, with Gemma-2's logit soft-capping where the
    config sets it). A loss that scores a few positions runs the body and applies the head to
    those positions only.
    """
    body = getattr(model, "base_model", None)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or out is None:
        raise ValueError(f"Cannot split {type(model).__name__} into a body and an LM head: expected a Hugging Face *ForCausalLM with base_model and get_output_embeddings().")
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if not cap:
        return body, out

    def head(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(out(h) / cap) * cap

    return body, head
