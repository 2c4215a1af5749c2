"""Backends that read activations at hook sites: plain torch hooks on HF models (the core
path), a TransformerLens view and an nnsight view. All return the same thing for the same
input, so any of them can fill an activation cache.

Every backend returns ``{str(site): [batch, pos, d_model]}``. With an ``attention_mask``,
each row's positions count from its first real token (as in ``generation.decode``, so a
left-padded row equals the same row unpadded) and padding positions are zero.

The TransformerLens and nnsight views wrap a *structural copy* of the model that shares
its parameters and buffers: booting a view never swaps the model's submodules, patches its
forwards or changes its attention implementation (both libraries do that to the model they
are given), and costs no extra weight memory.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import re
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from latentreason.hooks import record
from latentreason.sites import HookSite, resolve

if TYPE_CHECKING:
    from nnsight.modeling.transformers import TransformersModel
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

BACKENDS = ("hf", "transformer_lens", "nnsight")
NDIF_API_KEY_ENV = "NDIF_API_KEY"  # the variable nnsight itself reads; the only place we take the key from

# Execution order of site kinds inside a block: nnsight must read values in the order the model produces them.
_KIND_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class Backend(Protocol):
    name: str

    def activations(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None, sites: list[HookSite]) -> dict[str, Tensor]:
        """``{str(site): [batch, pos, d_model]}`` for one forward pass over ``input_ids``."""
        ...


# -- shared helpers -----------------------------------------------------------------------


def _forward_inputs(input_ids: Tensor, attention_mask: Tensor | None, device: torch.device | None) -> dict[str, Tensor]:
    """Model kwargs; with a mask, positions count from each row's first real token (as ``decode`` does)."""
    inputs = {"input_ids": input_ids}
    if attention_mask is not None:
        inputs["attention_mask"] = attention_mask
        inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [batch, pos]
    if device is not None:
        inputs = {k: v.to(device) for k, v in inputs.items()}
    return inputs


def _finish(acts: dict[str, Tensor], attention_mask: Tensor | None) -> dict[str, Tensor]:
    """Zero padding positions (backends disagree there, and fully masked rows can hold NaN)."""
    if attention_mask is None:
        return acts
    out = {}
    for key, x in acts.items():
        keep = attention_mask.to(device=x.device, dtype=torch.bool)[..., None]  # [batch, pos, 1]
        out[key] = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return out


def _parse_sites(model: torch.nn.Module, sites: list[str | HookSite]) -> list[HookSite]:
    """Parse and bind every site to ``model`` before anything runs, so a typo or bad layer raises."""
    parsed = list(dict.fromkeys(HookSite.parse(s) for s in sites))
    for site in parsed:
        resolve(model, site)
    return parsed


def _device_of(model: torch.nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return None if p is None or p.device.type == "meta" else p.device


def _shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s module tree and config that shares every parameter and buffer."""
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def _layout(model: torch.nn.Module) -> tuple:
    """Identity of the tensors a shared copy points at; changes when ``.to()`` moves or casts the model."""
    return tuple((id(t), t.data_ptr(), t.dtype, t.device) for t in (*model.parameters(), *model.buffers()))


class _ViewCache:
    """Per-model cache of views, dropped with the model and rebuilt when its tensors move."""

    def __init__(self) -> None:
        self._views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model: torch.nn.Module, build) -> Any:
        layout = _layout(model)
        hit = self._views.get(model)
        if hit is None or hit[0] != layout:
            hit = (layout, build(model))
            self._views[model] = hit
        return hit[1]


def _ids_only_tokenizer():
    """A one-token placeholder: both libraries insist on a tokenizer, the backends only feed token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>")


# -- Hugging Face (core path) ----------------------------------------------------------------


@functools.cache
def _takes_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


class HFBackend:
    """Plain torch hooks on the Hugging Face module tree (the default)."""

    name = "hf"

    def __repr__(self) -> str:
        return "HFBackend()"

    @torch.no_grad()
    def activations(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None, sites: list[HookSite]) -> dict[str, Tensor]:
        """``{str(site): [batch, pos, d_model]}`` for one forward pass over ``input_ids``."""
        parsed = _parse_sites(model, sites)
        inputs = _forward_inputs(input_ids, attention_mask, _device_of(model))
        if _takes_logits_to_keep(type(model)):
            inputs["logits_to_keep"] = 1  # the hooks read the blocks; [batch, pos, vocab] logits would only cost memory
        with record(model, parsed) as acts:
            model(**inputs)
        return _finish({k: v[0] for k, v in acts.items()}, attention_mask)


# -- TransformerLens ------------------------------------------------------------------------


def _bridge_tokenizer(tokenizer):
    """A copy TransformerLens may normalise without touching ours, and will not reload from disk or the Hub."""
    tok = copy.deepcopy(tokenizer)
    # TL reloads any tokenizer whose init kwargs lack add_bos_token (KeyError without name_or_path);
    # marking it keeps the tokenizer exactly as given.
    tok.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", "") or "")
    tok.init_kwargs["add_bos_token"] = True
    return tok


def _boot_bridge(model: torch.nn.Module, tokenizer) -> TransformerBridge:
    from transformer_lens.model_bridge import TransformerBridge

    name = getattr(model, "name_or_path", "") or getattr(model.config, "model_type", "model")
    try:
        # hf_model= copies the config from the model: nothing is fetched, whatever `name` is.
        bridge = TransformerBridge.boot_transformers(name, hf_model=_shared_copy(model), tokenizer=_bridge_tokenizer(tokenizer))
    except ValueError as e:
        raise ValueError(
            f"TransformerLens cannot bridge this {type(model).__name__} ({e}). Use backend 'hf' or 'nnsight', which take any architecture in latentreason.sites.ARCHITECTURES."
        ) from e
    # String inputs tokenize as ``tokenizer(text)`` does everywhere else in latentreason (TL's per-architecture
    # default would, e.g., drop the organism's BOS because Qwen2 models usually have none).
    bridge.cfg.default_prepend_bos = bool(getattr(bridge.cfg, "tokenizer_prepends_bos", False))
    if getattr(bridge, "_weights_processed", False):
        raise RuntimeError("TransformerLens processed the bridge's weights at boot, so its activations would not match Hugging Face's; pin transformer-lens<4.4.")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "This bridge shares the Hugging Face model's weights, and processing them (fold_ln, centering) would rewrite "
            "that model in place. Use enable_compatibility_mode(no_processing=True), or boot a bridge on a copy: "
            "TransformerBridge.boot_transformers(name, hf_model=copy.deepcopy(model), tokenizer=tok)."
        )

    object.__setattr__(bridge, "process_weights", refuse)  # enable_compatibility_mode() goes through it too
    return bridge


def tl_view(model: torch.nn.Module, tokenizer) -> TransformerBridge:
    """A TransformerLens ``TransformerBridge`` over ``model``, with raw (unprocessed) weights.

    Hook names are TransformerLens's (``blocks.L.hook_resid_post``, ``HookSite.tl_name``),
    activations equal the Hugging Face model's, and string inputs tokenize exactly as
    ``tokenizer(text)`` (BOS only where the tokenizer adds one; ``prepend_bos=`` overrides).
    The bridge shares ``model``'s weights, so weight processing (``process_weights()``,
    ``enable_compatibility_mode()`` without ``no_processing=True``) raises instead of
    rewriting them.

    Example:
        >>> bridge = tl_view(pair.base_model, pair.base_tokenizer)  # doctest: +SKIP
        >>> logits, cache = bridge.run_with_cache(ids, names_filter="blocks.1.hook_resid_post")  # doctest: +SKIP
    """
    if tokenizer is None:
        raise ValueError("tl_view needs the model's tokenizer (TransformerLens tokenizes string inputs with it); pass e.g. pair.base_tokenizer.")
    return _boot_bridge(model, tokenizer)


class TransformerLensBackend:
    """Activations through a TransformerLens bridge (``run_with_cache`` on ``blocks.L.hook_<kind>``).

    Takes attention masks (left padding); the bridge is booted once per model and cached.
    """

    name = "transformer_lens"

    def __init__(self) -> None:
        self._bridges = _ViewCache()

    def __repr__(self) -> str:
        return "TransformerLensBackend()"

    def bridge(self, model: torch.nn.Module) -> TransformerBridge:
        """The cached bridge over ``model`` (token-id input only: it carries a placeholder tokenizer)."""
        return self._bridges.get(model, lambda m: _boot_bridge(m, _ids_only_tokenizer()))

    @torch.no_grad()
    def activations(self, model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None, sites: list[HookSite]) -> dict[str, Tensor]:
        """``{str(site): [batch, pos, d_model]}`` for one forward pass over ``input_ids``."""
        parsed = _parse_sites(model, sites)
        bridge = self.bridge(model)
        names = {str(s): s.tl_name for s in parsed}
        missing = [n for n in names.values() if n not in bridge.hook_dict]
        if missing:
            raise ValueError(f"TransformerLens bridge of {type(model).__name__} has no hook {missing[0]!r}; use backend 'hf' or 'nnsight' for this model.")
        inputs = _forward_inputs(input_ids, attention_mask, _device_of(model))
        _, cache = bridge.run_with_cache(inputs.pop("input_ids"), names_filter=list(names.values()), **inputs)
        return _finish({key: cache[name] for key, name in names.items()}, attention_mask)


# -- nnsight --------------------------------------------------------------------------------


def ndif_api_key() -> str:
    """The NDIF API key from ``$NDIF_API_KEY``; raises before any network use when it is unset."""
    key = os.environ.get(NDIF_API_KEY_ENV, "").strip()
    if not key:
        raise RuntimeError(
            f"Remote (NDIF) execution needs an API key in the environment variable {NDIF_API_KEY_ENV}; "
            f"get one at https://login.ndif.us and run `export {NDIF_API_KEY_ENV}=...`, or use remote=False."
        )
    return key


def _configure_ndif() -> None:
    """Hand the key from the environment to nnsight (whose config read it only at import). Never logged."""
    from nnsight import CONFIG

    key = ndif_api_key()
    if CONFIG.API.APIKEY != key:
        CONFIG.API.APIKEY = key
    log.debug("NDIF API key taken from $%s", NDIF_API_KEY_ENV)


def _hub_id_of(model: Any) -> str:
    """The Hub id NDIF will run for ``model``; raises for local or unnamed models, which NDIF cannot run."""
    name = model if isinstance(model, str) else str(getattr(model, "name_or_path", "") or "")
    if not name or Path(name).exists() or not _HUB_ID.match(name):
        raise ValueError(
            f"Remote (NDIF) execution runs NDIF's hosted copy of a Hugging Face Hub checkpoint, but this model "
            f"{'has no Hub id' if not name else f'comes from {name!r}, which is not a Hub id'}. "
            "Pass a Hub id (e.g. 'meta-llama/Llama-3.1-8B') or a model loaded from one, or use remote=False."
        )
    return name


def _is_nnsight_model(model: Any) -> bool:
    from nnsight.modeling.transformers import TransformersModel

    return isinstance(model, TransformersModel)


def _wrap_nnsight(model: torch.nn.Module | str, tokenizer) -> TransformersModel:
    from nnsight.modeling.transformers import TransformersModel

    tokenizer = None if tokenizer is None else copy.deepcopy(tokenizer)  # nnsight sets pad token and padding side on it
    if isinstance(model, str):
        return TransformersModel(model, tokenizer=tokenizer)  # meta weights; dispatched on first local run
    return TransformersModel(_shared_copy(model), tokenizer=tokenizer)


def _hf_module_of(view: TransformersModel) -> torch.nn.Module:
    return view._module


def nnsight_view(model: torch.nn.Module | str, tokenizer, *, remote: bool = False) -> TransformersModel:
    """An nnsight ``TransformersModel`` over ``model`` (a loaded HF model, or a Hub id).

    Sites are module paths (``model.layers.3.output``). A loaded model is wrapped through a
    weight-sharing copy, so nnsight's forward patches never reach it. ``remote=True`` checks and
    configures NDIF access (key from ``$NDIF_API_KEY``) and requires a Hub checkpoint; then pass
    ``remote=True`` to the view's own ``trace(...)`` too.

    Example:
        >>> view = nnsight_view(pair.base_model, pair.base_tokenizer)  # doctest: +SKIP
        >>> with view.trace(ids):  # doctest: +SKIP
        ...     h = view.model.layers[1].output.save()
    """
    if remote:
        _configure_ndif()
        _hub_id_of(model)
    if tokenizer is None and not isinstance(model, str):
        raise ValueError("nnsight_view needs the model's tokenizer for a loaded model; pass e.g. pair.base_tokenizer.")
    return _wrap_nnsight(model, tokenizer)


class NNsightBackend:
    """Activations through nnsight's module tree: block input/output, attention and MLP outputs.

    ``model`` may be a loaded HF model, an nnsight ``TransformersModel`` or a Hub id. With
    ``remote=True`` the forward runs on NDIF (key from ``$NDIF_API_KEY``, never logged) against
    its hosted copy of the Hub checkpoint, so the model must come from the Hub; ``remote="local"``
    is nnsight's offline dry run of the same path.
    """

    name = "nnsight"

    def __init__(self, remote: bool | str = False) -> None:
        if remote not in (False, True, "local"):
            raise ValueError(f"remote={remote!r}: expected False, True (NDIF) or 'local' (nnsight's offline dry run).")
        self.remote = remote
        self._views = _ViewCache()
        self._hub_views: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"NNsightBackend(remote={self.remote!r})"

    def view(self, model: Any) -> TransformersModel:
        """The nnsight model this backend traces for ``model`` (cached per model)."""
        if _is_nnsight_model(model):
            return model
        if isinstance(model, str):
            if model not in self._hub_views:
                self._hub_views[model] = _wrap_nnsight(model, None)
            return self._hub_views[model]
        return self._views.get(model, lambda m: _wrap_nnsight(m, _ids_only_tokenizer()))

    def activations(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None, sites: list[HookSite]) -> dict[str, Tensor]:
        """``{str(site): [batch, pos, d_model]}`` for one forward pass over ``input_ids``."""
        import nnsight

        if self.remote is True:
            _configure_ndif()
            _hub_id_of(model if not _is_nnsight_model(model) else model.repo_id)
        view = self.view(model)
        hf = _hf_module_of(view)
        parsed = sorted(_parse_sites(hf, sites), key=lambda s: (s.layer, _KIND_ORDER[s.kind]))
        paths = {id(m): p for p, m in hf.named_modules()}
        targets = [(paths[id(r.module)], r.pre) for r in (resolve(hf, s) for s in parsed)]
        inputs = _forward_inputs(input_ids, attention_mask, None if self.remote is True else _device_of(hf))
        with torch.no_grad(), view.trace(**inputs, remote=self.remote):
            values = []
            for path, pre in targets:  # in execution order: nnsight cannot go back to an earlier module
                x = view.get(path + (".input" if pre else ".output"))
                values.append(x[0] if isinstance(x, tuple) else x)
            values = nnsight.save(values)
        return _finish({str(s): v.detach() for s, v in zip(parsed, values)}, attention_mask)


def get_backend(name: str = "hf", **options: Any) -> Backend:
    """The backend called ``name`` (``hf``, ``transformer_lens`` or ``nnsight``).

    Options go to the backend: ``get_backend("nnsight", remote=True)`` runs on NDIF.
    """
    if name == "hf":
        cls: type = HFBackend
    elif name == "transformer_lens":
        cls = TransformerLensBackend
    elif name == "nnsight":
        cls = NNsightBackend
    else:
        raise ValueError(f"Unknown backend {name!r}: expected 'hf', 'transformer_lens' or 'nnsight'.")
    try:
        return cls(**options)
    except TypeError as e:
        raise TypeError(f"Backend {name!r} does not take {', '.join(map(repr, options))}: only 'nnsight' takes an option (remote=).") from e
