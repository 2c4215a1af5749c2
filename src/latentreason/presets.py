"""Model-pair presets: a TOML file naming a base model, its post-RL twin and how to prompt them.

Schema (unknown keys are rejected)::

    name = "qwen-math-1.5b"          # default: the file's stem
    task = "math500"                 # arith | gsm8k | math500

    [base]                           # and [post_rl], same keys
    model = "Qwen/Qwen2.5-Math-1.5B" # hub id, local directory, or latentreason:<path in the package>
    prompt_template = "Question: {prompt}\\nAnswer: Let's think step by step.\\n"  # literal braces doubled: \\boxed{{}}
    chat_template = false            # wrap the templated prompt with the tokenizer's chat template
    revision = "main"                # optional hub revision
    trust_remote_code = false        # default false
    allow_pickle = false             # default false: safetensors weights only; true also loads pytorch_model.bin (torch weights_only)

    [defaults]
    sites = ["resid_post@0.4"]       # hook sites; KIND@F is layer floor(F * num_layers) of the base model
    router_site = "resid_post@0.9"   # optional; the post-RL site the hybrid's router reads (default: sites[0])
    dtype = "bfloat16"
    max_new_tokens = 4096
    device_map = "auto"              # optional; used when no device is given and CUDA is present

Presets are named (``--pair qwen-math-1.5b``: always the file shipped in the package, one
copy, the same on every machine) or given as a path (``--pair my.toml``: always that file).
To change one, copy it (``latentreason presets copy qwen-math-1.5b my.toml``), edit the copy
and pass its path. A ``NAME.toml`` or ``configs/NAME.toml`` in the working directory that
differs from the shipped preset ``NAME`` is not read by ``--pair NAME``; a warning names both.

A preset whose base and post-RL models are the two models of one organism pair directory
(``latentreason:organism/default/...``, or a pair written by ``latentreason organism train``)
loads that pair's extra models (single-problem RL) and task config as well, so it gives the
same pair as ``--pair organism``.

A model path that starts with ``./``, ``../``, ``/`` or ``~``, or that exists relative to the
TOML file's directory, is a local directory (relative paths resolve against that directory);
``latentreason:organism/default/base`` is a directory inside the installed package; anything
else is a hub id.

Example:
    >>> resolve_preset("qwen-math-1.5b").name
    'qwen-math-1.5b.toml'
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from latentreason.io import read_json
from latentreason.pair import ModelPair, ModelSpec, default_device, load_model, load_tokenizer, resolve_dtype

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "latentreason:"
TOP_KEYS = {"name", "task", "base", "post_rl", "defaults"}
MODEL_KEYS = {"model", "prompt_template", "chat_template", "revision", "trust_remote_code", "allow_pickle"}
DEFAULT_KEYS = {"sites", "router_site", "dtype", "max_new_tokens", "device_map"}
TASKS = ("arith", "gsm8k", "math500")


def presets_dir() -> Path:
    """Directory of the presets shipped inside the package."""
    return Path(str(importlib.resources.files("latentreason") / "configs"))


def available_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def shipped_preset(name: str) -> Path:
    """The file of the shipped preset ``name`` (``qwen-math-1.5b``), the one copy there is."""
    shipped = presets_dir() / f"{name}.toml"
    if Path(name).name != name or not shipped.is_file():
        raise FileNotFoundError(f"Unknown preset {name!r}: the shipped presets are {', '.join(available_presets())} (`latentreason presets list`); or pass a path to a .toml file.")
    return shipped


def shadowing_copies(name: str, cwd: str | os.PathLike | None = None) -> list[Path]:
    """Files in the working directory (``NAME.toml``, ``configs/NAME.toml``) that differ from the shipped preset ``name``.

    ``--pair NAME`` reads the shipped preset, never these: a user who edited one of them
    meant it to be used, so :func:`resolve_preset` warns, naming both files.
    """
    shipped = presets_dir() / f"{name}.toml"
    if not shipped.is_file():
        return []
    base = Path(cwd) if cwd is not None else Path.cwd()
    found = []
    for cand in (base / f"{name}.toml", base / "configs" / f"{name}.toml"):
        if cand.is_file() and cand.resolve() != shipped.resolve() and cand.read_bytes() != shipped.read_bytes():
            found.append(cand)
    return found


def warn_if_shadowed(name: str) -> None:
    """Log a warning for each working-directory copy of preset ``name`` that differs from the shipped one."""
    for cand in shadowing_copies(name):
        log.warning("--pair %s reads the shipped preset %s, not %s, which differs from it; to use your edit, pass its path: --pair %s", name, presets_dir() / f"{name}.toml", cand, cand)


def resolve_preset(name: str | os.PathLike) -> Path:
    """Path of a preset given as a file path (that file) or as the name of a shipped preset (the shipped file)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.suffix == ".toml" or len(p.parts) > 1:
        hint = f" The shipped preset {p.stem!r} is used by name: --pair {p.stem} (or get an editable copy with `latentreason presets copy {p.stem} {p}`)." if p.stem in available_presets() else ""
        raise FileNotFoundError(f"Preset file {p} does not exist; pass an existing .toml or one of the shipped presets: {', '.join(available_presets())}.{hint}")
    shipped = shipped_preset(p.name)
    warn_if_shadowed(p.name)
    return shipped


def copy_preset(name: str, dest: str | os.PathLike) -> Path:
    """Copy the shipped preset ``name`` to ``dest`` (a new file, never overwritten) for editing; returns ``dest``."""
    from latentreason.io import write_bytes

    src = shipped_preset(name)
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another destination (presets copy never overwrites a file).")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"Directory {dest.parent} does not exist; create it or choose another destination.")
    return write_bytes(dest, src.read_bytes())


def organism_pair_dir(cfg: dict[str, Any]) -> Path | None:
    """The organism pair directory whose base and post-RL models a read preset names, or None.

    Such a preset describes that organism pair: loading it takes the pair's extra models and
    task config from its ``pair.json`` (see :func:`load_preset`).
    """
    from latentreason.pair import PAIR_KIND, PAIR_MANIFEST

    base, post = Path(cfg["base"].path), Path(cfg["post_rl"].path)
    if not (base.is_dir() and post.is_dir()) or base.parent.resolve() != post.parent.resolve():
        return None
    root = base.parent
    try:
        man = read_json(root / PAIR_MANIFEST)
    except (OSError, ValueError):
        return None
    models = man.get("models", {}) if isinstance(man, dict) else {}
    if man.get("kind") != PAIR_KIND or not isinstance(models, dict):
        return None
    if models.get("base") != base.name or models.get("post_rl") != post.name:
        return None
    return root


def read_preset(path: str | os.PathLike) -> dict[str, Any]:
    """The validated preset as a dict: ``name``, ``task``, ``base``/``post_rl`` (:class:`ModelSpec`), ``defaults``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"Preset {path} does not exist.") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"Preset {path} is not valid TOML: {e}") from e
    _reject_unknown(raw, TOP_KEYS, path, "the top level")
    for role in ("base", "post_rl"):
        if not isinstance(raw.get(role), dict):
            raise ValueError(f"Preset {path} has no [{role}] table: add one with at least `model = \"<hub id or directory>\"`.")
    task = raw.get("task", "math500")
    if task not in TASKS:
        raise ValueError(f"Preset {path}: unknown task {task!r}; use one of {', '.join(TASKS)}.")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ValueError(f"Preset {path}: name must be a non-empty string, got {name!r}.")
    return {
        "name": name,
        "task": task,
        "base": _model_spec(raw["base"], path, "base"),
        "post_rl": _model_spec(raw["post_rl"], path, "post_rl"),
        "defaults": _defaults(raw.get("defaults", {}), path),
    }


def load_preset(path: str | os.PathLike, device: str | None = None, dtype: str | None = None) -> ModelPair:
    """Load the pair a preset describes.

    ``device`` and ``dtype`` override the preset; with no ``device``, a preset's ``device_map``
    is used when CUDA is available, else the default device. Depth-relative sites
    (``resid_post@0.4``) are resolved against the loaded base model into ``defaults["sites"]``.
    """
    from latentreason.sites import site_in as _site_in

    path = resolve_preset(path)
    cfg = read_preset(path)
    d = dict(cfg["defaults"])
    torch_dtype = resolve_dtype(dtype or d.get("dtype", "bfloat16"))
    device_map = d.get("device_map") if device is None else None
    if device_map is not None:
        import torch

        if not torch.cuda.is_available():
            device_map = None
    dev = None if device_map else (device or default_device())
    specs: dict[str, ModelSpec] = {role: cfg[role] for role in ("base", "post_rl")}
    models, tokenizers = {}, {}
    organism, extras, task_config = organism_pair_dir(cfg), {}, {}
    if organism is not None:  # the organism's own loader: its extra models and task config come too, as with --pair organism
        from latentreason.pair import load_organism_pair

        org = load_organism_pair(organism, device=dev or "cpu")
        models = {"base": org.base_model.to(torch_dtype), "post_rl": org.post_rl_model.to(torch_dtype)}
        tokenizers = {"base": org.base_tokenizer, "post_rl": org.post_rl_tokenizer}
        extras = {name: m.to(torch_dtype) for name, m in org.extras.items()}
        task_config = org.task_config
    for role, spec in specs.items():
        if role in models:
            continue
        tokenizers[role] = load_tokenizer(spec.path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        models[role] = load_model(spec.path, dtype=torch_dtype, device=dev, revision=spec.revision, trust_remote_code=spec.trust_remote_code, device_map=device_map, allow_pickle=spec.allow_pickle)

    def site_in(model, s: str, key: str) -> str:
        """``s`` with a depth fraction (``resid_post@0.4``) made a layer of ``model``, checked to exist there."""
        try:
            return str(_site_in(model, s))
        except ValueError as e:
            raise ValueError(f"Preset {path}: [defaults] {key}: {e}") from e

    sites = [site_in(models["base"], s, "sites") for s in d.get("sites", ["resid_post@0.4"])]
    d["sites"], d["site"] = sites, sites[0]
    if d.get("router_site"):  # the post-RL site the hybrid's router reads
        d["router_site"] = site_in(models["post_rl"], d["router_site"], "router_site")
    d["dtype"] = str(torch_dtype).removeprefix("torch.")
    return ModelPair(
        name=cfg["name"],
        task=cfg["task"],
        base_model=models["base"],
        post_rl_model=models["post_rl"],
        base_tokenizer=tokenizers["base"],
        post_rl_tokenizer=tokenizers["post_rl"],
        base_spec=specs["base"],
        post_rl_spec=specs["post_rl"],
        source=str(path),
        defaults=d,
        task_config=task_config,
        extras=extras,
    )


def _reject_unknown(table: dict[str, Any], known: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"Preset {path}: unknown key {unknown[0]!r} in {where}; allowed keys are {', '.join(sorted(known))}.")


def _model_spec(table: dict[str, Any], path: Path, role: str) -> ModelSpec:
    _reject_unknown(table, MODEL_KEYS, path, f"[{role}]")
    model = table.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"Preset {path}: [{role}] needs `model = \"<hub id or directory>\"`.")
    template = table.get("prompt_template", "{prompt}")
    if not isinstance(template, str):
        raise ValueError(f"Preset {path}: [{role}] prompt_template must be a string.")
    try:
        probe = template.format(prompt="\x00")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"Preset {path}: [{role}] prompt_template {template!r} is not a valid template ({e}); write {{prompt}} for the question and double other braces, e.g. \\\\boxed{{{{}}}}.") from e
    if "\x00" not in probe:
        raise ValueError(f"Preset {path}: [{role}] prompt_template {template!r} has no {{prompt}} placeholder.")
    for key in ("chat_template", "trust_remote_code", "allow_pickle"):
        if not isinstance(table.get(key, False), bool):
            raise ValueError(f"Preset {path}: [{role}] {key} must be true or false, got {table[key]!r}.")
    revision = table.get("revision")
    if revision is not None and not isinstance(revision, str):
        raise ValueError(f"Preset {path}: [{role}] revision must be a string, got {revision!r}.")
    return ModelSpec(
        path=_resolve_model(model.strip(), path, role),
        prompt_template=template,
        chat_template=table.get("chat_template", False),
        revision=revision,
        trust_remote_code=table.get("trust_remote_code", False),
        allow_pickle=table.get("allow_pickle", False),
    )


def _resolve_model(model: str, path: Path, role: str) -> str:
    """A local directory as an absolute path, or the hub id unchanged."""
    if model.startswith(PACKAGE_PREFIX):
        local = Path(str(importlib.resources.files("latentreason"))) / model.removeprefix(PACKAGE_PREFIX)
        if not local.is_dir():
            hint = f" Train it with `latentreason organism train --out {local.parent}`." if "organism/default" in model else ""
            raise FileNotFoundError(f"Preset {path}: [{role}] model {model!r} is missing from the installed package ({local}).{hint}")
        return str(local)
    explicit = model.startswith(("./", "../", "/", "~", ".\\", "..\\")) or Path(model).is_absolute()
    local = (path.parent / Path(model).expanduser()).resolve()
    if explicit and not local.is_dir():
        raise FileNotFoundError(f"Preset {path}: [{role}] model directory {model!r} does not exist (resolved to {local}); paths are relative to the preset's directory.")
    return str(local) if local.is_dir() else model


def _check_site_name(s: str, path: Path, key: str) -> None:
    """A site name (``resid_post.11``) or a depth fraction (``resid_post@0.4``); layers are checked once the model is loaded."""
    from latentreason.sites import check_site_name

    try:
        check_site_name(s)
    except ValueError as e:
        raise ValueError(f"Preset {path}: [defaults] {key}: {e}") from e


def _defaults(table: Any, path: Path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ValueError(f"Preset {path}: defaults must be a table ([defaults]).")
    _reject_unknown(table, DEFAULT_KEYS, path, "[defaults]")
    out = dict(table)
    sites = out.get("sites", ["resid_post@0.4"])
    if not isinstance(sites, list) or not sites or not all(isinstance(s, str) for s in sites):
        raise ValueError(f"Preset {path}: [defaults] sites must be a non-empty list of site names, e.g. [\"resid_post@0.4\"] or [\"resid_post.11\"].")
    for s in sites:
        _check_site_name(s, path, "sites")
    out["sites"] = sites
    rs = out.get("router_site")
    if rs is not None:
        if not isinstance(rs, str):
            raise ValueError(f"Preset {path}: [defaults] router_site must be one site name, e.g. \"resid_post@0.9\" or \"resid_post.20\", got {rs!r}.")
        _check_site_name(rs, path, "router_site")
    if "dtype" in out:
        try:
            resolve_dtype(out["dtype"])
        except ValueError as e:
            raise ValueError(f"Preset {path}: [defaults] {e}") from e
    mnt = out.get("max_new_tokens", 512)
    if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt <= 0:
        raise ValueError(f"Preset {path}: [defaults] max_new_tokens must be a positive integer, got {mnt!r}.")
    out["max_new_tokens"] = mnt
    if "device_map" in out and not isinstance(out["device_map"], str):
        raise ValueError(f"Preset {path}: [defaults] device_map must be a string such as \"auto\", got {out['device_map']!r}.")
    return out
