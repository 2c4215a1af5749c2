"""``latentreason run CONFIG.toml``: the whole pipeline, every stage from one TOML file.

The file has three top-level keys and three tables (every key optional, unknown keys refused)::

    pair = "organism"          # 'organism', a pair directory, a preset name or a preset .toml
    out = "runs/organism"      # the run directory (``--out`` overrides it)

    [recover]                  # RecoverConfig: sizes, task/data, sites, taxonomy, method, alphas,
    n_train = 400              # thresholds, decodings, controls, ... (defaults: ``latentreason recover``'s)

    [quality]                  # reasoning-quality measures of several generators (QualityConfig)
    generators = ["base", "post_rl", "hybrid"]

    [report]                   # the self-contained report.html (ReportConfig)
    rollouts = 3

The stages run in order — rollouts, cache, taxonomy, vectors, router, points, quality, report —
each reused when it is already there with the same config and inputs, resumed when interrupted,
and refused when it was made otherwise (``force`` rebuilds it). The ``[recover]`` table maps
one to one onto :class:`~latentreason.recovery.RecoverConfig`, so ``run`` writes the same
``recovery.json``, byte for byte, as ``latentreason recover`` with the equivalent flags.
Paths in the file are read as on the command line: relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentreason.recovery import RecoverConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualityConfig:
    """The ``[quality]`` table: the options of ``latentreason quality``.

    Generators are those of ``latentreason quality --generator``, plus ``hybrid`` (this run's
    hybrid examples) and ``single_problem_sft`` (the SFT model the recovery stage trained).
    """

    enabled: bool = True
    generators: tuple[str, ...] = ("base", "post_rl", "hybrid")
    n: int = 300
    split: str = "test"
    scorer: str = "post_rl"
    fractions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    filler: str = "."
    sft_steps: int = 30  # of the 'sft' generator
    sft_lr: float = 1e-4
    max_new_tokens: int | None = None
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n <= 0 or self.batch_size <= 0:
            raise ValueError(f"[quality] n={self.n} and batch_size={self.batch_size} must be positive.")
        if not self.generators:
            raise ValueError("[quality] generators is empty: name at least one, e.g. [\"base\", \"post_rl\"], or set enabled = false.")
        if any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise ValueError(f"[quality] fractions {list(self.fractions)} must lie in [0, 1].")


@dataclass(frozen=True)
class ReportConfig:
    """The ``[report]`` table."""

    enabled: bool = True
    rollouts: int = 3  # rollouts shown per generator

    def __post_init__(self) -> None:
        if self.rollouts < 0:
            raise ValueError(f"[report] rollouts={self.rollouts} must be >= 0.")


@dataclass(frozen=True)
class RunConfig:
    """One pipeline run: the pair, the run directory and the settings of every stage."""

    pair: str = "organism"
    out: str | None = None
    recover: RecoverConfig = field(default_factory=RecoverConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "the run config") -> RunConfig:
        """Build from a parsed TOML table; unknown keys and ill-typed values are refused, naming the allowed ones."""
        tables = {"recover": RecoverConfig, "quality": QualityConfig, "report": ReportConfig}
        top = {"pair": "str", "out": "str | None"}
        unknown = sorted(set(d) - set(top) - set(tables))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed at the top level: {sorted(top)} and the tables {sorted(tables)}.")
        kwargs: dict[str, Any] = {k: _coerce(source, k, d[k], t) for k, t in top.items() if k in d}
        for name, klass in tables.items():
            sub = d.get(name, {})
            if not isinstance(sub, dict):
                raise ValueError(f"{source}: {name} must be a table ([{name}]), got {sub!r}.")
            types = {f.name: f.type for f in dataclasses.fields(klass)}
            bad = sorted(set(sub) - set(types))
            if bad:
                raise ValueError(f"{source}: unknown key(s) {bad} in [{name}]; allowed: {sorted(types)}.")
            kwargs[name] = klass(**{k: _coerce(source, f"{name}.{k}", v, types[k]) for k, v in sub.items()})
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> RunConfig:
        """Read a run config file (see the module docstring; ``examples/organism.toml`` is a documented one)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"Run config {path} does not exist.") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"Run config {path} is not valid TOML: {e}") from e
        return cls.from_dict(data, source=str(path))


def _coerce(source: str, key: str, value: Any, annotation: str) -> Any:
    """A TOML value as the dataclass field wants it (integers given for floats become floats, lists tuples)."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")

    def fail(want: str) -> ValueError:
        return ValueError(f"{source}: {key} = {value!r} must be {want}" + (" (leave it out for the default)" if optional else "") + ".")

    if base == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if base in ("tuple[float, ...]", "tuple[str, ...]"):
        item = "float" if "float" in base else "str"
        if not isinstance(value, list):
            raise fail(f"a list of {'numbers' if item == 'float' else 'strings'}")
        return tuple(_coerce(source, f"{key}[{i}]", v, item) for i, v in enumerate(value))
    raise TypeError(f"{key}: no TOML reading for a field of type {annotation!r}.")


def quality_settings(cfg: RunConfig) -> dict[str, Any]:
    """What determines the run's quality stage (recorded as ``quality.json``'s ``config``)."""
    q = cfg.quality
    return {"pair": cfg.pair, "generators": list(q.generators), "n": q.n, "split": q.split, "seed": q.seed, "sft_steps": q.sft_steps, "sft_lr": q.sft_lr,
            "scorer": q.scorer, "fractions": list(q.fractions), "filler": q.filler, "max_new_tokens": q.max_new_tokens, "batch_size": q.batch_size}


def run_quality(pair, rd, cfg: RunConfig, *, force: bool = False) -> Path:
    """The quality stage of a run: reused when ``RUN/quality`` holds one with these settings."""
    from latentreason.manifest import Manifest
    from latentreason.quality import build_generators, quality_report, write_quality
    from latentreason.rollouts import task_for_pair
    from latentreason.stage import canonical

    q, settings = cfg.quality, quality_settings(cfg)
    if (rd.quality / "manifest.json").exists() and not force:
        try:
            if Manifest.read(rd.quality, kind="quality").config.get("config") == canonical(settings):
                log.info("%s already holds quality measures with these settings: reused", rd.quality)
                return rd.quality
        except FileNotFoundError:  # unfinished: measure again
            pass
    r = cfg.recover
    task = task_for_pair(pair, r.task, r.data) if r.data else task_for_pair(pair, r.task)
    problems = task.sample(q.split, q.n, seed=q.seed)
    specs = [f"hybrid:{rd.root}" if g == "hybrid" else f"model:{rd.sft}" if g == "single_problem_sft" else g for g in q.generators]
    gens, _ = build_generators(pair, specs, task, problems, max_new_tokens=q.max_new_tokens, batch_size=q.batch_size, sft_steps=q.sft_steps, sft_lr=q.sft_lr, seed=q.seed)
    report = quality_report(pair, gens, q.scorer, task=task, fractions=q.fractions, filler=q.filler, batch_size=q.batch_size, seed=q.seed)
    report["config"] = settings
    write_quality(rd.quality, report, force=force)
    return rd.quality


def run_pipeline(cfg: RunConfig, out: str | os.PathLike | None = None, *, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every stage of ``cfg`` into ``out`` (default ``cfg.out``); returns the recovery result.

    Example:
        >>> result = run_pipeline(RunConfig.from_toml("examples/organism.toml"), "runs/organism")  # doctest: +SKIP
    """
    from latentreason.pair import load_pair
    from latentreason.recovery import run_recovery
    from latentreason.stage import claim_run_file, open_run, record_run_file

    target = out if out is not None else cfg.out
    if target is None:
        raise ValueError("No run directory: set out = \"runs/NAME\" in the config file, or pass --out.")
    pair = load_pair(cfg.pair)
    with open_run(target) as rd:
        if cfg.report.enabled:
            claim_run_file(rd.root, rd.report.name)  # refuse a foreign report.html before any compute
        result = run_recovery(pair, rd.root, cfg.recover, progress, force=force)
        if cfg.quality.enabled:
            run_quality(pair, rd, cfg, force=force)
        if cfg.report.enabled:
            from latentreason.report import build_report

            build_report(rd.root, cfg.report.rollouts)
            record_run_file(rd.root, rd.report.name)
    return result
