"""All hook registration: ``record`` reads activations at sites, ``intervene`` edits them.

Both are context managers that resolve every site before registering anything, register
all hooks before entering, and remove exactly their own hooks on exit, even when the
forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from latentreason.sites import HookSite, ResolvedSite, resolve

EditFn = Callable[[Tensor], Tensor]  # [batch, pos, d_model] -> same shape; must not edit in place


def _first(x: Any) -> Tensor:
    return x[0] if isinstance(x, tuple) else x


def _make_hook(rs: ResolvedSite, fn: Callable[[Tensor], Tensor | None]):
    """A torch hook that passes the site's activation to ``fn`` and substitutes its result if it returns one."""
    if rs.pre:

        def pre_hook(module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return pre_hook

    def post_hook(module, args, output):
        new = fn(_first(output))
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return post_hook


@contextmanager
def hooked(model: torch.nn.Module, fns: Sequence[tuple[str | HookSite, Callable[[Tensor], Tensor | None]]]) -> Iterator[None]:
    """Register ``fn`` at each site for the duration of the block (the primitive behind record/intervene)."""
    resolved = [(resolve(model, site), fn) for site, fn in fns]  # raises on a bad site before touching the model
    handles = []
    try:
        for rs, fn in resolved:
            hook = _make_hook(rs, fn)
            if rs.pre:
                handles.append(rs.module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(rs.module.register_forward_hook(hook))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record(model: torch.nn.Module, sites: Sequence[str | HookSite], *, to_cpu: bool = False, dtype: torch.dtype | None = None) -> Iterator[dict[str, list[Tensor]]]:
    """Record activations at ``sites``: yields ``{site: [tensor per forward call]}``, each ``[batch, pos, d_model]``, detached.

    Example:
        >>> from latentreason.organism import load_default
        >>> model = load_default().base_model
        >>> with record(model, ["resid_post.1"]) as acts:
        ...     _ = model(input_ids=torch.tensor([[1, 5, 6]]))
        >>> acts["resid_post.1"][0].shape[:2]
        torch.Size([1, 3])
    """
    parsed = [HookSite.parse(s) for s in sites]
    store: dict[str, list[Tensor]] = {str(s): [] for s in parsed}

    def saver(key: str):
        def fn(x: Tensor) -> None:
            y = x.detach()
            if dtype is not None:
                y = y.to(dtype)
            store[key].append(y.cpu() if to_cpu else y)

        return fn

    with hooked(model, [(s, saver(str(s))) for s in parsed]):
        yield store


@contextmanager
def intervene(model: torch.nn.Module, edits: Sequence[tuple[str | HookSite, EditFn]]) -> Iterator[None]:
    """Replace the activation at each site by ``fn(activation)`` during the block."""
    with hooked(model, list(edits)):
        yield


def active_hooks(model: torch.nn.Module) -> int:
    """Number of forward (pre-)hooks registered anywhere on ``model`` (tests assert it returns to 0)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
