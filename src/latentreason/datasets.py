"""Load GSM8K and MATH-500 as :class:`~latentreason.tasks.math.MathProblem` lists.

From a local file in the hub schema when a path is given (CLI ``--data PATH``), otherwise
through the ``datasets`` library (``pip install 'latentreason[datasets]'``):

* GSM8K (``openai/gsm8k``, config ``main``, split ``test``): ``question``, ``answer`` (a worked
  solution ending in ``#### <number>``).
* MATH-500 (``HuggingFaceH4/MATH-500``, split ``test``): ``problem``, ``solution``, ``answer``,
  ``subject``, ``level``.

A local file is JSONL (``.jsonl``/``.json``, one object per line) or Parquet; a directory may
hold ``test.jsonl`` / ``test.parquet`` directly or under ``gsm8k/`` / ``math500/`` (the layout of
``shared/data``). Problem ids are ``<dataset>-<first 10 hex of sha256(question)>``, stable
across file order, subsets and sources.

Example:
    >>> from pathlib import Path
    >>> probs = load_gsm8k(Path("../shared/data/gsm8k/test.jsonl"))  # doctest: +SKIP
    >>> probs[0].gold  # doctest: +SKIP
    '18'
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentreason.tasks.math import MathProblem

log = logging.getLogger(__name__)

HUB = {"gsm8k": ("openai/gsm8k", "main", "test"), "math500": ("HuggingFaceH4/MATH-500", None, "test")}
SUFFIXES = (".jsonl", ".json", ".parquet")


def load_gsm8k(path: str | os.PathLike | None = None) -> list[MathProblem]:
    """GSM8K test problems; ``gold`` is the number after ``####`` with thousands commas removed."""
    return load("gsm8k", path)


def load_math500(path: str | os.PathLike | None = None) -> list[MathProblem]:
    """MATH-500 problems; ``gold`` is the ``answer`` field (LaTeX), ``solution`` the worked solution."""
    return load("math500", path)


def load(name: str, path: str | os.PathLike | None = None) -> list[MathProblem]:
    """Problems of dataset ``name`` (``gsm8k`` or ``math500``) from ``path`` or the hub."""
    if name not in HUB:
        raise ValueError(f"Unknown dataset {name!r}: expected one of {', '.join(HUB)}.")
    convert = _CONVERTERS[name]
    if path is not None:
        file = resolve_data_file(name, path)
        return [convert(row, f"{file}, {where}") for where, row in _read_rows(file)]
    rows = _hub_rows(name)
    return [convert(row, f"hub {HUB[name][0]}, row {i}") for i, row in enumerate(rows, 1)]


def resolve_data_file(name: str, path: str | os.PathLike) -> Path:
    """The data file ``path`` names: itself, or ``test.{jsonl,parquet}`` in it or in its ``name/`` subdirectory."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for d in (p, p / name):
            for stem in ("test.jsonl", "test.parquet"):
                if (d / stem).is_file():
                    return d / stem
        raise FileNotFoundError(f"No {name} data in directory {p}: expected test.jsonl or test.parquet there or in {p / name}. Pass --data with the file itself.")
    raise FileNotFoundError(f"{name} data file {p} does not exist; pass --data with a JSONL or Parquet file in the hub schema.")


def _read_rows(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, row)`` pairs of a JSONL or Parquet file; location is ``line N`` / ``row N``."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"Reading {file} needs pyarrow: pip install pyarrow (or convert the file to JSONL).") from e
        try:
            table = pq.read_table(file)
        except Exception as e:  # pyarrow raises its own error types
            raise ValueError(f"{file} is not a readable Parquet file ({e}).") from e
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"row {i}", row
        return
    if suffix not in (".jsonl", ".json"):
        raise ValueError(f"Unsupported data file {file}: use JSONL (.jsonl) or Parquet (.parquet) in the hub schema.")
    with open(file, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}, line {i}: not valid JSON ({e.msg}); each line must be one JSON object.") from e
            if not isinstance(row, dict):
                raise ValueError(f"{file}, line {i}: expected a JSON object, got {type(row).__name__}.")
            yield f"line {i}", row


def _hub_rows(name: str) -> list[dict[str, Any]]:
    repo, config, split = HUB[name]
    try:
        hf_datasets = importlib.import_module("datasets")
    except ImportError:
        raise FileNotFoundError(
            f"Cannot load {name}: no local file was given and the `datasets` library is not installed. "
            f"Pass --data PATH (a JSONL or Parquet file in the {repo} schema), or pip install 'latentreason[datasets]'."
        ) from None
    try:
        ds = hf_datasets.load_dataset(repo, config, split=split) if config else hf_datasets.load_dataset(repo, split=split)
    except Exception as e:  # network, auth and cache errors all land here
        raise FileNotFoundError(
            f"Cannot load {name}: no local file was given and {repo} ({split}) could not be loaded through `datasets` ({type(e).__name__}: {e}). "
            f"Pass --data PATH (a JSONL or Parquet file in the {repo} schema)."
        ) from e
    return [dict(r) for r in ds]


def _problem_id(name: str, question: str) -> str:
    return f"{name}-{hashlib.sha256(question.strip().encode('utf-8')).hexdigest()[:10]}"


def _field(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        have = ", ".join(sorted(row)) or "none"
        raise ValueError(f"{where}: missing or empty text field {key!r} (fields present: {have}).")
    return value


def _gsm8k(row: dict[str, Any], where: str) -> MathProblem:
    question, answer = _field(row, "question", where), _field(row, "answer", where)
    if "####" not in answer:
        raise ValueError(f"{where}: GSM8K 'answer' must end with '#### <number>', got ...{answer[-60:]!r}.")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise ValueError(f"{where}: nothing after '####' in the GSM8K 'answer'.")
    return MathProblem(_problem_id("gsm8k", question), question, gold, solution=answer)


def _math500(row: dict[str, Any], where: str) -> MathProblem:
    question, solution, answer = _field(row, "problem", where), _field(row, "solution", where), _field(row, "answer", where)
    level = row.get("level")
    if isinstance(level, str):  # the original MATH release writes "Level 3"
        digits = level.removeprefix("Level").strip()
        level = int(digits) if digits.isdigit() else None
    if level is not None and not isinstance(level, int):
        raise ValueError(f"{where}: 'level' must be an integer 1-5, got {level!r}.")
    subject = row.get("subject")
    return MathProblem(_problem_id("math500", question), question, answer.strip(), solution=solution, level=level, subject=subject if isinstance(subject, str) else None)


_CONVERTERS: dict[str, Callable[[dict[str, Any], str], MathProblem]] = {"gsm8k": _gsm8k, "math500": _math500}
