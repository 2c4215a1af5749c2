"""Model fingerprints: a short hash that tells two models' weights apart."""

from __future__ import annotations

import hashlib
import json

import torch

_FULL_HASH_LIMIT = 20_000_000  # parameters; above this, hash a strided sample of each tensor


def model_fingerprint(model: torch.nn.Module) -> str:
    """16-hex-digit hash of a model's architecture and weights.

    Small models are hashed whole; large ones by a fixed strided sample of every tensor,
    which still separates any two checkpoints in practice and costs milliseconds.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        d = config.to_dict()
        keep = {k: d.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "n_embd", "n_layer")}
        h.update(json.dumps(keep, sort_keys=True, default=str).encode())
    total = sum(p.numel() for p in model.parameters())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        flat = p.detach().reshape(-1)
        if total > _FULL_HASH_LIMIT and flat.numel() > 4096:
            flat = flat[:: max(1, flat.numel() // 4096)][:4096]
        h.update(flat.to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def hidden_size_of(model: torch.nn.Module) -> int:
    cfg = model.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError(f"Cannot tell the hidden size of {type(model).__name__}: its config has no hidden_size/n_embd/d_model.")
