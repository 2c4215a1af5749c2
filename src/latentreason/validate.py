"""Checks that run before any model loads: sizes, strengths, output directories, and hook sites
against a model's ``config.json``.

Every command calls these first, so a typo fails in a second with a message naming the value and
the fix, instead of after the models load or after all the compute. The library's config
dataclasses call the same helpers, so Python users get the same errors.

Example:
    >>> check_positive("--n", 3)
    3
    >>> check_finite("alpha", float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: alpha=inf is not a finite number.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def check_positive(name: str, value: Any) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def check_nonnegative(name: str, value: Any) -> int:
    """``value`` if it is an integer >= 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0.")
    return int(value)


def check_finite(name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """``value`` as a float if it is a finite real number within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is not a number.")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r} is not a finite number.")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name}={value!r} must be {'>' if low_open else '>='} {low:g}.")
    if high is not None and v > high:
        raise ValueError(f"{name}={value!r} must be <= {high:g}.")
    return v


def check_temperature(value: Any, name: str = "temperature") -> float:
    """A sampling temperature: finite and >= 0 (0 is greedy)."""
    return check_finite(name, value, low=0.0)


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` if it is, or can be created as, a directory this process can write; creates nothing.

    Refuses a path that is a file, one below a file (file-shadowed), and one whose nearest existing
    ancestor cannot be written (read-only file system, permissions): the errors that otherwise
    surface as a raw traceback after all the compute.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path} is a file, not a directory. Choose another {option} (a new or existing directory).")
    anc = p
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise ValueError(f"{option} {path} cannot be created: {anc} is a file, not a directory. Choose another {option}.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".latentreason-write-check-", dir=anc)
    except OSError as e:
        where = "" if anc == p else f" (its nearest existing parent {anc} is not writable)"
        raise ValueError(f"{option} {path} is not writable{where}: {e.strerror or e}. Choose a directory you can write, e.g. runs/NAME.") from None
    os.close(fd)
    os.unlink(probe)
    return p


@dataclass(frozen=True)
class ModelShape:
    """What a model's ``config.json`` says about its shape (read without loading weights)."""

    path: str
    model_type: str | None
    num_layers: int | None
    hidden_size: int | None
    max_positions: int | None  # max_position_embeddings / n_positions: the position window


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool):
            return cfg[k]
    return None


def model_shape(path: str, revision: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a local model directory or a hub id, from its ``config.json`` only.

    A hub id is read from the Hugging Face cache, or fetched (one small file) when the hub is
    reachable; an unreachable hub fails fast (:func:`latentreason.pair.check_hub_model`).
    """
    from latentreason.io import read_json
    from latentreason.pair import check_hub_model

    p = Path(path).expanduser()
    if p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); point at a directory written by save_pretrained.")
    else:
        check_hub_model(path, revision)
        from huggingface_hub import hf_hub_download

        try:
            cfg_path = Path(hf_hub_download(path, "config.json", revision=revision))
        except Exception as e:  # network and hub errors: one line, not two tracebacks
            from latentreason.pair import ModelUnavailableError

            raise ModelUnavailableError(f"Cannot read config.json of {path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} is not a model config (not a JSON object).")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    merged = {**text, **cfg}
    return ModelShape(
        path=str(path),
        model_type=cfg.get("model_type"),
        num_layers=_first(merged, "num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=_first(merged, "hidden_size", "n_embd", "d_model"),
        max_positions=_first(merged, "max_position_embeddings", "n_positions", "n_ctx"),
    )


def check_site_in(shape: ModelShape, site: Any, role: str = "model", option: str = "--site") -> str:
    """The canonical name of ``site`` if ``shape``'s model has it; else a ValueError naming the layers it has."""
    from latentreason.sites import ARCHITECTURES, HookSite, check_layer, check_site_name, is_depth_site, site_at_depth

    if is_depth_site(site):  # resid_post@0.4: a layer once the depth is known
        try:
            check_site_name(site)
        except ValueError as e:
            raise ValueError(f"{option}: {e}") from None
        return str(site_at_depth(site, shape.num_layers)) if shape.num_layers is not None else str(site)
    try:
        s = HookSite.parse(site)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None
    if shape.model_type not in ARCHITECTURES:
        raise ValueError(f"The {role} model {shape.path} has architecture {shape.model_type!r}, which latentreason does not know ({', '.join(sorted(ARCHITECTURES))}). Add it to latentreason.sites.ARCHITECTURES.")
    if shape.num_layers is not None:
        try:
            check_layer(s, shape.num_layers)
        except ValueError as e:
            raise ValueError(f"{option}: {str(e).rstrip('.')} (the {role} model, per its config.json in {shape.path}); pick a layer in that range, e.g. {s.kind}.{shape.num_layers // 2}.") from None
    return str(s)


def check_pair_sites(pair_spec: str | os.PathLike, sites: Mapping[str, Iterable[Any]], option: str = "--site") -> dict[str, ModelShape]:
    """Check ``sites`` (``{role: [site, ...]}``) against the config of each role's model, before loading any.

    Unknown roles are refused too. Returns the shapes read, by role.
    """
    from latentreason.pair import pair_sources

    specs = pair_sources(pair_spec)
    shapes: dict[str, ModelShape] = {}
    for role, names in sites.items():
        if role not in specs:
            raise ValueError(f"Unknown model role {role!r}: pair {str(pair_spec)!r} has {', '.join(specs)}.")
        names = [n for n in names if n is not None]
        if not names:
            continue
        if role not in shapes:
            shapes[role] = model_shape(specs[role].path, specs[role].revision)
        for n in names:
            check_site_in(shapes[role], n, role, option)
    return shapes


def check_roles(pair_spec: str | os.PathLike, roles: Iterable[str], option: str = "--models") -> list[str]:
    """``roles`` if the pair has each of them (read from pair.json or the preset, nothing loaded)."""
    from latentreason.pair import pair_sources

    roles = list(roles)
    if not roles:
        raise ValueError(f"{option}: no model role given; pass e.g. {option} post_rl.")
    have = pair_sources(pair_spec)
    bad = [r for r in roles if r not in have]
    if bad:
        raise ValueError(f"{option}: unknown model role {bad[0]!r}; pair {str(pair_spec)!r} has {', '.join(have)}.")
    return roles
