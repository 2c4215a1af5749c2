"""Model pairs: a base model and its post-RL twin, with their tokenizers and prompts.

``load_pair`` accepts ``"organism"`` (the shipped default), an organism pair directory
(written by ``latentreason organism train``), or a TOML preset for real models
(``configs/*.toml``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentreason.fingerprint import model_fingerprint

log = logging.getLogger(__name__)

PAIR_MANIFEST = "pair.json"
PAIR_KIND = "latentreason-organism-pair"
ROLES = ("base", "post_rl")


@dataclass(frozen=True)
class ModelSpec:
    """Where one model comes from and how it is prompted."""

    path: str  # hub id or local directory
    prompt_template: str = "{prompt}"  # ``{prompt}`` is the task's prompt text
    chat_template: bool = False  # wrap the prompt with the tokenizer's chat template
    revision: str | None = None
    trust_remote_code: bool = False

    def format(self, prompt: str, tokenizer=None) -> str:
        text = self.prompt_template.format(prompt=prompt)
        if self.chat_template:
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"Model {self.path!r} is set to use a chat template, but its tokenizer has none; set chat_template = false.")
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text


@dataclass
class ModelPair:
    """A loaded base / post-RL pair. Extra models (e.g. single-problem RL) live in ``extras``."""

    name: str
    task: str
    base_model: Any
    post_rl_model: Any
    base_tokenizer: Any
    post_rl_tokenizer: Any
    base_spec: ModelSpec
    post_rl_spec: ModelSpec
    source: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # name -> model (same tokenizer as base)
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)

    def model(self, role: str):
        if role == "base":
            return self.base_model
        if role == "post_rl":
            return self.post_rl_model
        if role in self.extras:
            return self.extras[role]
        raise ValueError(f"Unknown model role {role!r}: this pair has {', '.join([*ROLES, *self.extras])}.")

    def tokenizer(self, role: str):
        return self.post_rl_tokenizer if role == "post_rl" else self.base_tokenizer

    def spec(self, role: str) -> ModelSpec:
        return self.post_rl_spec if role == "post_rl" else self.base_spec

    def fingerprint(self, role: str) -> str:
        if role not in self._fingerprints:
            self._fingerprints[role] = model_fingerprint(self.model(role))
        return self._fingerprints[role]

    def format_prompt(self, role: str, prompt: str) -> str:
        return self.spec(role).format(prompt, self.tokenizer(role))

    def default_sites(self) -> list[str]:
        """The sites to cache when none is named: the pair's ``sites`` (else its ``site``, else
        ``resid_post@0.4``), then its ``router_site``; the first is where vectors and taxonomies go."""
        d = self.defaults
        sites = list(d.get("sites") or ([d["site"]] if d.get("site") else ["resid_post@0.4"]))
        if d.get("router_site"):
            sites.append(d["router_site"])
        return list(dict.fromkeys(str(s) for s in sites))

    @property
    def same_tokenizer(self) -> bool:
        return self.base_tokenizer.get_vocab() == self.post_rl_tokenizer.get_vocab()

    def to(self, device: str | torch.device) -> ModelPair:
        for role in (*ROLES, *self.extras):
            self.model(role).to(device)
        return self


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer; a local directory with ``tokenizer.json`` loads as a fast tokenizer directly."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_dir() and (p / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    else:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path: str, dtype: str | torch.dtype = "float32", device: str | None = None, revision: str | None = None, trust_remote_code: bool = False, device_map: str | None = None):
    """Load a causal LM from a hub id or a local directory, in eval mode."""
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if (p.is_absolute() or path.startswith(".")) and not p.exists():
        raise FileNotFoundError(f"Model directory {path} does not exist.")
    if p.is_dir() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); point at a directory written by save_pretrained.")
    torch_dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if device_map:
        kwargs["device_map"] = device_map
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one bar per small model is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device and not device_map:
        model.to(device)
    model.eval()
    return model


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(table)}.")
    return table[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pair(spec: str | os.PathLike = "organism", *, device: str | None = None, dtype: str | None = None) -> ModelPair:
    """Load a pair by name (``organism``), organism directory or TOML preset."""
    s = str(spec)
    if s == "organism":
        from latentreason.organism import default_pair_dir

        return load_organism_pair(default_pair_dir(), device=device)
    p = Path(s)
    if p.suffix == ".toml":
        from latentreason.presets import load_preset

        return load_preset(p, device=device, dtype=dtype)
    if p.is_dir():
        return load_organism_pair(p, device=device)
    from latentreason.presets import available_presets, load_preset, resolve_preset

    if s in available_presets():
        return load_preset(resolve_preset(s), device=device, dtype=dtype)
    raise FileNotFoundError(f"Cannot load pair {s!r}: expected 'organism', an organism pair directory (with {PAIR_MANIFEST}) or a .toml preset from configs/.")


def load_organism_pair(directory: str | os.PathLike, device: str | None = None) -> ModelPair:
    """Load a pair written by ``latentreason organism train``."""
    from latentreason.io import read_json

    d = Path(directory)
    if not (d / PAIR_MANIFEST).exists():
        raise FileNotFoundError(f"{d} is not an organism pair directory: it has no {PAIR_MANIFEST}. Train one with `latentreason organism train --out {d}`.")
    man = read_json(d / PAIR_MANIFEST)
    if man.get("kind") != PAIR_KIND:
        raise ValueError(f"{d / PAIR_MANIFEST} is not an organism pair manifest (kind={man.get('kind')!r}).")
    models = man["models"]
    for role in ROLES:
        if role not in models or not (d / models[role] / "config.json").exists():
            raise FileNotFoundError(f"Organism pair {d} is missing its {role} model directory ({models.get(role)!r}); retrain it.")
    base_tok = load_tokenizer(str(d / models["base"]))
    post_tok = load_tokenizer(str(d / models["post_rl"]))
    if base_tok.get_vocab() != post_tok.get_vocab():
        raise ValueError(f"Organism pair {d}: the base and post_rl models have different tokenizers; an organism pair must share one. Retrain the pair.")
    dev = device or "cpu"
    pair = ModelPair(
        name=man.get("name", d.name),
        task=man.get("task", "arith"),
        base_model=load_model(str(d / models["base"]), device=dev),
        post_rl_model=load_model(str(d / models["post_rl"]), device=dev),
        base_tokenizer=base_tok,
        post_rl_tokenizer=post_tok,
        base_spec=ModelSpec(str(d / models["base"])),
        post_rl_spec=ModelSpec(str(d / models["post_rl"])),
        source=str(d),
        defaults=man.get("defaults", {}),
        task_config=man.get("task_config", {}),
    )
    for role, sub in models.items():
        if role not in ROLES and (d / sub / "config.json").exists():
            pair.extras[role] = load_model(str(d / sub), device=dev)
    return pair
