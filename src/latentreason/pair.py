"""Model pairs: a base model and its post-RL twin, with their tokenizers and prompts.

``load_pair`` accepts ``"organism"`` (the shipped default), an organism pair directory
(written by ``latentreason organism train``), a shipped preset's name (``latentreason presets
list``) or the path of a TOML preset file.
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
    allow_pickle: bool = False  # load pickle weights (pytorch_model.bin) with torch's weights_only loader; default: safetensors only

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


class ModelUnavailableError(FileNotFoundError):
    """A model's files are neither in a local directory nor in the Hugging Face cache, and cannot be fetched."""


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_OK: set[tuple[str, str | None]] = set()  # hub ids already found reachable in this process


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_model(repo_id: str, revision: str | None = None) -> None:
    """Fail fast, with one message, when hub id ``repo_id`` can be neither read from the cache nor fetched.

    A model whose ``config.json`` is in the Hugging Face cache passes without network. Otherwise,
    with ``HF_HUB_OFFLINE`` set it raises at once; else it asks the hub once (a few seconds at
    most) instead of letting the loaders retry for a minute and fail with two tracebacks.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    fix = f"Point at a local directory holding the model (config.json, tokenizer and *.safetensors), or download it first where the hub is reachable (`hf download {repo_id}`) so it is in the cache."
    if (repo_id, revision) in _HUB_OK:
        return
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except HFValidationError as e:
        raise ModelUnavailableError(f"Model {repo_id!r} is not a local directory, and not a valid hub id ({e}). Check the path; local paths are directories written by save_pretrained.") from None
    if isinstance(cached, str):
        _HUB_OK.add((repo_id, revision))
        return
    if hub_offline():
        raise ModelUnavailableError(f"Model {repo_id!r} is not a local directory and not in the Hugging Face cache, and HF_HUB_OFFLINE is set. {fix}")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except GatedRepoError:
        raise ModelUnavailableError(f"Model {repo_id!r} is gated on the hub: accept its licence on huggingface.co and log in (`hf auth login`). Or: {fix}") from None
    except RepositoryNotFoundError:
        raise ModelUnavailableError(f"Model {repo_id!r} is not a local directory and the hub has no such model (or it is private: log in with `hf auth login`). Check the id or the path.") from None
    except RevisionNotFoundError:
        raise ModelUnavailableError(f"Model {repo_id!r} has no revision {revision!r} on the hub. Fix the revision in the preset.") from None
    except Exception as e:  # no network, DNS failure, timeout, proxy: the loaders would retry for a minute
        raise ModelUnavailableError(f"Model {repo_id!r} is not a local directory and the Hugging Face hub cannot be reached ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). {fix}") from None
    _HUB_OK.add((repo_id, revision))


def _unavailable(what: str, path: str, e: Exception) -> ModelUnavailableError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ModelUnavailableError(f"Cannot load the {what} of {path!r}: {first}")


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer; a local directory with ``tokenizer.json`` loads as a fast tokenizer directly."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    try:
        if p.is_dir() and (p / "tokenizer.json").exists():
            tok = PreTrainedTokenizerFast.from_pretrained(str(p))
        else:
            if not p.is_dir():
                check_hub_model(path, revision)
            tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as e:  # transformers reports missing files and network failures as OSError
        if isinstance(e, ModelUnavailableError):
            raise
        raise _unavailable("tokenizer", path, e) from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def check_weights(directory: str | os.PathLike, allow_pickle: bool = False) -> None:
    """Refuse a local model directory whose weights are pickle-only (unless ``allow_pickle``) or truncated.

    Reads only file names and safetensors headers, so it costs nothing next to loading.
    """
    from latentreason.io import check_safetensors_file

    d = Path(directory)
    st = sorted(d.glob("*.safetensors"))
    pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not st and pickles and not allow_pickle:
        raise ValueError(
            f"{d} holds only pickle weights ({', '.join(pickles)}); latentreason loads safetensors only, because unpickling can run code. "
            "Convert them to safetensors where you trust the file (model.save_pretrained(dir, safe_serialization=True)), "
            "or, if you trust it, set allow_pickle = true in the preset's model table (Python: load_model(..., allow_pickle=True)) to load them with torch's weights_only loader."
        )
    for f in st:
        check_safetensors_file(f)


def load_model(path: str, dtype: str | torch.dtype = "float32", device: str | None = None, revision: str | None = None, trust_remote_code: bool = False, device_map: str | None = None, allow_pickle: bool = False):
    """Load a causal LM from a hub id or a local directory, in eval mode.

    Weights load from safetensors only; ``allow_pickle=True`` also accepts ``pytorch_model.bin``
    (read with torch's ``weights_only`` loader). Truncated files and unreachable hub ids raise one-line errors.
    """
    from transformers import AutoModelForCausalLM

    p = Path(path)
    if (p.is_absolute() or path.startswith(".")) and not p.exists():
        raise FileNotFoundError(f"Model directory {path} does not exist.")
    if p.is_dir() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); point at a directory written by save_pretrained.")
    if p.is_dir():
        check_weights(p, allow_pickle)
    else:
        check_hub_model(path, revision)
    torch_dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True}
    if revision:
        kwargs["revision"] = revision
    if device_map:
        kwargs["device_map"] = device_map
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one bar per small model is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:  # missing or pickle-only weights on the hub, network failures
        hint = " (latentreason loads safetensors only; set allow_pickle = true in the preset to accept pytorch_model.bin)" if not allow_pickle and "safetensors" in str(e).lower() else ""
        raise ModelUnavailableError(f"{_unavailable('weights', path, e)}{hint}") from e
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


def pair_sources(spec: str | os.PathLike = "organism") -> dict[str, ModelSpec]:
    """Where each model of pair ``spec`` comes from, by role, read from ``pair.json`` or the preset without loading anything.

    Resolves ``spec`` as :func:`load_pair` does; the argument checks of every command start here.
    """
    from latentreason.io import read_json

    s = str(spec)
    p = Path(s)
    if s != "organism" and (p.suffix == ".toml" or not p.is_dir()):
        from latentreason.presets import available_presets, read_preset, resolve_preset

        if p.suffix == ".toml" or s in available_presets():
            cfg = read_preset(resolve_preset(s))
            return {role: cfg[role] for role in ROLES}
        raise FileNotFoundError(f"Cannot load pair {s!r}: expected 'organism', an organism pair directory (with {PAIR_MANIFEST}) or a .toml preset from configs/.")
    if s == "organism":
        from latentreason.organism import default_pair_dir

        p = default_pair_dir()
    if not (p / PAIR_MANIFEST).exists():
        raise FileNotFoundError(f"{p} is not an organism pair directory: it has no {PAIR_MANIFEST}. Train one with `latentreason organism train --out {p}`.")
    man = read_json(p / PAIR_MANIFEST)
    models = man.get("models") if isinstance(man, dict) else None
    if not isinstance(models, dict) or any(r not in models for r in ROLES):
        raise ValueError(f"{p / PAIR_MANIFEST} is not an organism pair manifest: it needs 'models' with {' and '.join(ROLES)}. Retrain the pair.")
    return {role: ModelSpec(str(p / _check_model_subdir(p, role, sub))) for role, sub in models.items()}


def _check_model_subdir(directory: Path, role: str, sub: Any) -> str:
    """``sub`` if it is a plain directory name inside the pair directory (pair.json may not point elsewhere)."""
    if not isinstance(sub, str) or not sub or sub in (".", "..") or any(c in sub for c in "/\\") or Path(sub).name != sub:
        raise ValueError(f"{directory / PAIR_MANIFEST}: model {role!r} is {sub!r}, not a directory name inside the pair directory. Retrain the pair.")
    return sub


def load_pair(spec: str | os.PathLike = "organism", *, device: str | None = None, dtype: str | None = None) -> ModelPair:
    """Load a pair by name (``organism``), organism directory or TOML preset."""
    s = str(spec)
    if s == "organism":
        from latentreason.organism import default_pair_dir
        from latentreason.presets import warn_if_shadowed

        warn_if_shadowed("organism")  # an edited organism.toml in the working directory is not what this loads

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
    raise FileNotFoundError(f"Cannot load pair {s!r}: expected 'organism', an organism pair directory (with {PAIR_MANIFEST}), a .toml preset file or a shipped preset name (`latentreason presets list`).")


def pair_weight_hashes(directory: str | os.PathLike, models: dict[str, str]) -> dict[str, str]:
    """``{"<model dir>/<file>.safetensors": sha256}`` for every weight file of the pair's model directories (pair.json's ``hashes``)."""
    from latentreason.io import sha256_file

    d = Path(directory)
    return {f"{sub}/{f.name}": sha256_file(f) for sub in dict.fromkeys(models.values()) for f in sorted((d / sub).glob("*.safetensors"))}


def verify_pair_weights(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every weight file of an organism pair against the sha256 that ``pair.json`` records.

    Hashing reads each file once (about a second per gigabyte); the shipped organism's three models
    are 4 MB. A bit-flipped, truncated or swapped file is refused here, not deep inside sampling.
    """
    d = Path(directory)
    hashes = manifest.get("hashes")
    fix = "Reinstall latentreason (the shipped pair) or retrain it with `latentreason organism train`."
    if not isinstance(hashes, dict) or not hashes:
        raise ValueError(f"{d / PAIR_MANIFEST} records no weight hashes, so its weights cannot be checked. {fix}")
    actual = pair_weight_hashes(d, manifest["models"])
    for name in sorted(set(hashes) | set(actual)):
        if name not in actual:
            raise FileNotFoundError(f"{d / name} is listed in {PAIR_MANIFEST} but missing. {fix}")
        if name not in hashes:
            raise ValueError(f"{d / name} is not listed in {PAIR_MANIFEST}'s hashes: the pair was changed after it was written. {fix}")
        if actual[name] != hashes[name]:
            raise ValueError(f"{d / name} is corrupt or modified: its sha256 ({actual[name][:12]}…) differs from the one in {PAIR_MANIFEST} ({str(hashes[name])[:12]}…). {fix}")


def load_organism_pair(directory: str | os.PathLike, device: str | None = None) -> ModelPair:
    """Load a pair written by ``latentreason organism train``."""
    from latentreason.io import read_json

    d = Path(directory)
    if not (d / PAIR_MANIFEST).exists():
        raise FileNotFoundError(f"{d} is not an organism pair directory: it has no {PAIR_MANIFEST}. Train one with `latentreason organism train --out {d}`.")
    man = read_json(d / PAIR_MANIFEST)
    if man.get("kind") != PAIR_KIND:
        raise ValueError(f"{d / PAIR_MANIFEST} is not an organism pair manifest (kind={man.get('kind')!r}).")
    models = man.get("models")
    if not isinstance(models, dict):
        raise ValueError(f"{d / PAIR_MANIFEST} lists no 'models'; retrain the pair.")
    for role, sub in models.items():
        _check_model_subdir(d, role, sub)
    for role in ROLES:
        if role not in models or not (d / models[role] / "config.json").exists():
            raise FileNotFoundError(f"Organism pair {d} is missing its {role} model directory ({models.get(role)!r}); retrain it.")
    verify_pair_weights(d, man)
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
