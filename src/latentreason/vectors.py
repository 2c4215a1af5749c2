"""``SteeringVector``: a direction in one model's residual stream at one site, as data.

Saved as ``<name>.safetensors`` (the direction) plus ``<name>.json`` (everything else).
Loading and applying check the model fingerprint and hidden size.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentreason.fingerprint import hidden_size_of, model_fingerprint
from latentreason.io import read_json, read_tensor_artifact, write_json, write_tensor_artifact
from latentreason.sites import HookSite

METHODS = ("diffmeans", "probe", "optimized", "bias", "random", "manual")


@dataclass(frozen=True)
class SteeringVector:
    """A steering direction for one model at one site.

    ``direction`` is ``[d_model]`` and already carries its scale (``norm`` is its L2 norm);
    applying with strength ``alpha`` adds ``alpha * direction``.
    """

    name: str  # e.g. the strategy ("step", "multiply") or "bias"
    direction: torch.Tensor  # [d_model]
    site: HookSite
    method: str
    fingerprint: str  # model_fingerprint of the model it was made for
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", HookSite.parse(self.site))
        d = self.direction
        if not isinstance(d, torch.Tensor) or d.ndim != 1:
            raise ValueError(f"SteeringVector {self.name!r}: direction must be a 1-D tensor [d_model], got {getattr(d, 'shape', type(d))}.")
        if not torch.isfinite(d).all():
            raise ValueError(f"SteeringVector {self.name!r}: direction has non-finite values.")
        if self.method not in METHODS:
            raise ValueError(f"SteeringVector {self.name!r}: unknown method {self.method!r}; expected one of {METHODS}.")

    @property
    def norm(self) -> float:
        return float(self.direction.norm())

    @property
    def d_model(self) -> int:
        return int(self.direction.shape[0])

    def with_norm(self, norm: float) -> SteeringVector:
        """The same direction rescaled to L2 norm ``norm``."""
        return dataclasses.replace(self, direction=self.direction * (norm / max(self.norm, 1e-12)))

    def check_model(self, model: torch.nn.Module, fingerprint: str | None = None) -> None:
        """Raise if this vector was made for another model or hidden size."""
        hs = hidden_size_of(model)
        if hs != self.d_model:
            raise ValueError(f"Vector {self.name!r} has d_model {self.d_model}, but the model's hidden size is {hs}: it was made for another model.")
        fp = fingerprint or model_fingerprint(model)
        if fp != self.fingerprint:
            raise ValueError(
                f"Vector {self.name!r} was made for model {self.fingerprint}, not this one ({fp}). "
                "Extract vectors for this model (latentreason extract), or pass check=False if you mean it."
            )

    def apply(self, model: torch.nn.Module, alpha: float = 1.0, at: Any = "all", **kwargs: Any):
        """Context manager adding ``alpha * direction`` at this vector's site where ``at`` says.

        Same as ``latentreason.steering.steer(model, [(self, alpha)], at=at, **kwargs)``; yields the
        :class:`~latentreason.steering.Steering` record.
        """
        from latentreason.steering import steer

        return steer(model, [(self, alpha)], at=at, **kwargs)

    # ------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``<directory>/<name>.safetensors`` and ``<name>.json``; returns the JSON path.

        Each file carries the other's hash (:func:`latentreason.io.write_tensor_artifact`), so
        :meth:`load` refuses a JSON edited to another site, method or model.
        """
        d = Path(directory)
        check_vector_name(self.name, d)
        meta = {
            "name": self.name,
            "site": str(self.site),
            "method": self.method,
            "fingerprint": self.fingerprint,
            "d_model": self.d_model,
            "norm": self.norm,
            "provenance": self.provenance,
        }
        return write_tensor_artifact(d / f"{self.name}.json", {"direction": self.direction.detach().float().cpu()}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SteeringVector:
        """Load from ``<name>.json`` (or its ``.safetensors``), checking both files' hashes."""
        p = Path(path)
        if p.suffix != ".json":
            p = p.with_suffix(".json")
        meta, tensors = read_tensor_artifact(p, required=("name", "site", "method", "fingerprint", "d_model"), what="steering vector")
        if "direction" not in tensors:
            raise ValueError(f"{p.with_suffix('.safetensors')} holds no 'direction' tensor: it is not a steering vector file.")
        direction = tensors["direction"]
        if direction.shape != (meta["d_model"],):
            raise ValueError(f"{p}: direction shape {tuple(direction.shape)} disagrees with d_model {meta['d_model']}.")
        return cls(meta["name"], direction, HookSite.parse(meta["site"]), meta["method"], meta["fingerprint"], meta.get("provenance", {}))


def check_vector_name(name: Any, directory: str | os.PathLike = ".") -> str:
    """``name`` if it is a plain file name (no directory part, not ``.``/``..``), else a ValueError.

    Vector names become file names inside one directory; a name such as ``../../x`` would read or
    write outside it.
    """
    bad = not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\x00") or Path(name).name != name or name.startswith(".")
    if bad:
        raise ValueError(f"Vector name {name!r} in {directory} is not a plain file name: names may not be empty, start with '.', or contain '/' or '\\'. Rename the vector (e.g. 'step').")
    return name


def save_vectors(vectors: list[SteeringVector], directory: str | os.PathLike) -> Path:
    d = Path(directory)
    names = [check_vector_name(v.name, d) for v in vectors]
    if len(set(names)) != len(names):
        raise ValueError(f"Vector names must be unique within a directory, got {names}.")
    for v in vectors:
        v.save(d)
    write_json(d / "index.json", {"vectors": names})
    return d


def load_vectors(directory: str | os.PathLike) -> dict[str, SteeringVector]:
    """All vectors in a directory written by :func:`save_vectors`, by name."""
    from latentreason.manifest import check_finished

    d = Path(directory)
    check_finished(d)  # an unfinished vectors stage is refused
    if not (d / "index.json").exists():
        raise FileNotFoundError(f"{d} holds no steering vectors (no index.json). Create them with `latentreason extract`.")
    index = read_json(d / "index.json")
    names = index.get("vectors") if isinstance(index, dict) else None
    if not isinstance(names, list):
        raise ValueError(f"{d / 'index.json'} is not a vector index: it needs a list under 'vectors'. Re-run `latentreason extract`.")
    return {check_vector_name(n, d): SteeringVector.load(d / f"{n}.json") for n in names}
