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
"""

from __future__ import annotations

import re
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
