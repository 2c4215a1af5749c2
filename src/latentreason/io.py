"""Atomic, hash-checked artifact I/O: nothing half-written is ever left behind."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts get ordinary permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON (NaN and infinities become null), written atomically."""
    return write_text(path, dumps_json(obj, indent=2) + "\n")


def dumps_json(obj: Any, *, default: Callable[[Any], Any] | None = None, **kwargs: Any) -> str:
    """``obj`` as strict JSON: NaN and infinities become ``null`` (bare ``NaN`` is not JSON), paths
    and tensors / numpy values become JSON values; ``default`` handles anything else (e.g. ``str``).
    The one encoder of files and of every command's ``--json`` output.

    Example:
        >>> dumps_json({"recovery": float("nan"), "acc": [0.5, float("inf")]})
        '{"recovery": null, "acc": [0.5, null]}'
    """

    def encode(o: Any) -> Any:
        try:
            return _finite(_json_default(o))
        except TypeError:
            if default is None:
                raise
            return _finite(default(o))

    return json.dumps(_finite(obj), default=encode, allow_nan=False, **kwargs)


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    text = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"Missing file {path}.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and re-run the stage that wrote it.") from e


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing file {path}.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i}: not valid JSON ({e}).") from e
    return rows


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Save tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}  # clone: tied weights share memory
    return atomic_write(path, lambda p: save_file(contiguous, str(p), metadata=dict(metadata or {})))


def load_tensors(path: str | os.PathLike, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking its hash first when one is given."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing tensor file {path}.")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ValueError(f"{path} is corrupt or truncated: its sha256 does not match the manifest. Delete it and re-run.")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({e}). Delete it and re-run.") from e


def canonical_json(obj: Any) -> str:
    """The one byte form of a JSON value that its hash is taken over: keys sorted, no spaces, ASCII.

    ``obj`` is first normalised exactly as :func:`write_json` stores it (non-finite floats become
    null, paths strings, tensors lists), so a dict and the same dict read back give the same text.
    """
    stored = json.loads(json.dumps(_finite(obj), default=_json_default, allow_nan=False))
    return json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def json_sha256(obj: Any) -> str:
    """sha256 of :func:`canonical_json` of ``obj``: what seals JSON metadata against edits."""
    return sha256_bytes(canonical_json(obj).encode("ascii"))


SEAL_KEY = "latentreason_json_sha256"  # safetensors header metadata: sha256 of the companion JSON


def write_tensor_artifact(json_path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` to ``<json_path>.safetensors`` and ``meta`` to ``json_path``, each checking the other.

    The tensor file's header carries the sha256 of ``meta`` (:func:`json_sha256`); the JSON gets
    ``"sha256"``, the tensor file's hash. :func:`read_tensor_artifact` checks both, so an edit to
    either file (a vector's site, a router's threshold) is refused on load. Returns the JSON path.
    """
    json_path = Path(json_path)
    if "sha256" in meta:
        raise ValueError("Artifact metadata must not carry its own 'sha256' key: write_tensor_artifact adds the tensor file's hash.")
    st = save_tensors(json_path.with_suffix(".safetensors"), tensors, metadata={SEAL_KEY: json_sha256(dict(meta))})
    return write_json(json_path, {**meta, "sha256": sha256_file(st)})


def read_tensor_artifact(json_path: str | os.PathLike, required: Iterable[str] = (), what: str = "artifact") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors written by :func:`write_tensor_artifact`, after checking both hashes.

    ``required`` lists metadata keys that must be present; the errors name the file and the fix.
    """
    from safetensors import safe_open

    json_path = Path(json_path)
    st = json_path.with_suffix(".safetensors")
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path} is not a latentreason {what} file (its JSON is not an object). Re-run the stage that wrote it.")
    for key in ("sha256", *required):
        if key not in meta:
            raise ValueError(f"{json_path} is not a latentreason {what} file: key {key!r} is missing. Re-run the stage that wrote it.")
    tensors = load_tensors(st, expected_sha256=meta["sha256"])
    with safe_open(str(st), framework="pt") as f:
        sealed = (f.metadata() or {}).get(SEAL_KEY)
    if sealed is None:
        raise ValueError(f"{st} carries no hash of {json_path.name} (written by an older latentreason, or not by latentreason), so edits to its metadata cannot be detected. Re-run the stage that wrote it.")
    if json_sha256({k: v for k, v in meta.items() if k != "sha256"}) != sealed:
        raise ValueError(
            f"{json_path} was edited after it was written: its metadata no longer matches the hash sealed in {st.name}. "
            "Restore the original file, or re-run the stage that wrote it; never edit artifact metadata by hand."
        )
    return meta, tensors


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise a one-line ValueError unless ``path`` is a complete safetensors file (header and data all present).

    Reads only the header, so it is cheap for multi-gigabyte weights; a truncated download or copy
    fails here instead of deep inside the loader.
    """
    import struct

    path = Path(path)
    size = path.stat().st_size
    fix = "It is truncated or corrupt: download or copy it again."
    try:
        with open(path, "rb") as f:
            if size < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"its header claims {n} bytes but the file has {size}")
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}). {fix}") from None
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise ValueError(f"{path} holds {size} bytes but its header needs {need}. {fix}")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")
