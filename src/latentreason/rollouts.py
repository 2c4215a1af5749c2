"""Rollouts: generations of the pair's models on a task split, graded and segmented into sentences.

A rollouts artifact is ``RUN/rollouts/rollouts.jsonl`` (one row per generation) plus a
``manifest.json`` (kind ``"rollouts"``) recording the task, its config, the sampling settings and
the fingerprints of the pair's models. Each row holds::

    id, model, task, split, problem_index, problem, prompt, completion, n_tokens, finished,
    answer, gold, correct, sentences [{index, start, end, text, label}], labels

Rollouts are task-generic. A task needs ``sample(split, n, seed)``, ``prompt(problem)``,
``grade(problem, completion)`` and ``extract_answer(completion)``; optionally
``problem_to_json(problem)``, ``gold(problem)`` and ``strategy_labels(completion)``
(see :func:`problem_to_json`, :func:`gold_of`, :func:`labeler_of`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentreason.generation import check_window, decode, left_pad
from latentreason.io import read_jsonl, sha256_file, write_jsonl
from latentreason.manifest import MANIFEST_NAME, Manifest
from latentreason.pair import ROLES, ModelPair
from latentreason.rundir import RunDir
from latentreason.segment import sentence_records, split_sentences
from latentreason.tasks import get_task

log = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
ROLLOUTS_KIND = "rollouts"
_ALIASES = {"organism": "arith"}


def task_name(name: str | None) -> str:
    """Canonical task name (``organism`` is ``arith``)."""
    return _ALIASES.get(name or "", name or "")


def check_task(pair: ModelPair, name: str, what: str = "task") -> None:
    """Refuse a task the pair cannot be meant for.

    The organism (a pair made for ``arith``) knows only its own task, and no real pair is made
    for ``arith``: those mismatches raise. A real pair's task is its default, so running it on
    another real task only logs a warning. Pairs without a task accept any.
    """
    mine, theirs = task_name(pair.task), task_name(name)
    if not mine or mine == theirs:
        return
    if "arith" in (mine, theirs):
        raise ValueError(f"Pair {pair.name!r} is made for task {pair.task!r}, but the {what} is {name!r}. Use --task {pair.task} or another pair.")
    log.warning("pair %r is made for task %r; the %s is %r", pair.name, pair.task, what, name)


def task_for_pair(pair: ModelPair, name: str | None = None, data: str | os.PathLike | None = None):
    """The task object: the pair's own (with its ``task_config``) unless ``name`` names another.

    ``data`` is a real dataset's local file or directory (see ``latentreason.tasks.get_task``).
    """
    name = name or pair.task
    if not name:
        raise ValueError(f"Pair {pair.name!r} names no task; pass one with --task.")
    check_task(pair, name)
    kwargs: dict[str, Any] = {} if data is None else {"data": data}
    if pair.task_config and task_name(name) == task_name(pair.task):
        kwargs.update(pair.task_config)
    return get_task(name, **kwargs)


def problem_to_json(task, problem) -> Any:
    """JSON form of a problem: ``task.problem_to_json(p)`` when the task defines it, else ``p.expr``
    (arith), else the problem itself when it is a str/dict, else its dataclass fields."""
    if hasattr(task, "problem_to_json"):
        return task.problem_to_json(problem)
    if hasattr(problem, "expr"):
        return problem.expr
    if isinstance(problem, (str, dict, int, float)):
        return problem
    if dataclasses.is_dataclass(problem):
        return dataclasses.asdict(problem)
    raise TypeError(f"Cannot serialise a {type(problem).__name__} problem: give task {getattr(task, 'name', task)!r} a problem_to_json method.")


def gold_of(task, problem) -> Any:
    """Reference answer: ``task.gold(p)`` when defined, else ``p.answer`` / ``p["answer"]``, else None."""
    if hasattr(task, "gold"):
        return task.gold(problem)
    if isinstance(problem, Mapping):
        return problem.get("answer")
    return getattr(problem, "answer", None)


def labeler_of(task) -> Callable[[str], list[str | None]] | None:
    """The task's planted-strategy labeller (``strategy_labels``), or None when it has none."""
    if hasattr(task, "strategy_labels"):
        return task.strategy_labels
    if task_name(getattr(task, "name", "")) == "arith":
        from latentreason.tasks.arith import strategy_labels

        return strategy_labels
    return None


def task_config_of(task) -> dict[str, Any]:
    """The task's settings as JSON: its ``config`` dataclass, else its public scalar attributes."""
    cfg = getattr(task, "config", None)
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    simple = (str, int, float, bool, type(None))
    out: dict[str, Any] = {}
    for k, v in vars(task).items():
        if k.startswith("_") or k == "name":
            continue
        if isinstance(v, os.PathLike):
            v = str(v)
        if isinstance(v, simple) or (isinstance(v, (tuple, list)) and all(isinstance(x, simple) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def make_row(task, *, rollout_id: str, model: str, split: str, index: int, problem, completion: str, n_tokens: int | None = None, finished: bool | None = None) -> dict[str, Any]:
    """One graded, segmented rollout row (see the module docstring for its fields)."""
    labeler = labeler_of(task)
    sents = split_sentences(completion)
    labels: list[str | None] | None = None
    if labeler is not None:  # label each sentence from its own text: one label per sentence, by construction
        labels = [next(iter(labeler(s.text)), None) for s in sents]
    answer = task.extract_answer(completion)
    return {
        "id": rollout_id,
        "model": model,
        "task": task_name(getattr(task, "name", "")),
        "split": split,
        "problem_index": index,
        "problem": problem_to_json(task, problem),
        "prompt": task.prompt(problem),
        "completion": completion,
        "n_tokens": n_tokens,
        "finished": finished,
        "answer": answer,
        "gold": gold_of(task, problem),
        "correct": bool(task.grade(problem, completion)),
        "sentences": sentence_records(completion, labels),
        "labels": labels,
    }


def check_rollout_args(n: int, batch_size: int = 64, max_new_tokens: int | None = None, temperature: float = 0.0) -> None:
    """Refuse sizes and temperatures :func:`generate_rollouts` cannot use; cheap, so commands call it before loading models."""
    from latentreason.validate import check_positive, check_temperature

    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n={n!r}: ask for at least one problem (a positive integer).")
    check_positive("batch_size", batch_size)
    if max_new_tokens is not None:
        check_positive("max_new_tokens", max_new_tokens)
    check_temperature(temperature)


def default_max_new_tokens(pair: ModelPair, task) -> int:
    return int(pair.defaults.get("max_new_tokens") or getattr(task, "max_new_tokens", None) or 512)


@torch.no_grad()
def generate_rollouts(
    pair: ModelPair,
    task,
    split: str,
    n: int,
    seed: int = 0,
    models: Sequence[str] = ("post_rl",),
    temperature: float = 0.0,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Generate, grade and segment ``n`` problems of ``split`` with each model role in ``models``.

    Batched KV-cached decoding (:func:`latentreason.generation.decode`) on left-padded prompts,
    each built by ``pair.format_prompt(role, task.prompt(problem))``. Batches are formed from
    prompts sorted by length; sampled rows (``temperature > 0``) depend on ``seed`` and ``batch_size``.

    Example:
        >>> from latentreason.organism import load_default
        >>> pair = load_default()
        >>> rows = generate_rollouts(pair, "arith", "dev", 2, max_new_tokens=8)
        >>> sorted(rows[0])[:3]
        ['answer', 'completion', 'correct']
    """
    task = task_for_pair(pair, task) if isinstance(task, str) else task
    check_task(pair, task.name)
    check_rollout_args(n, batch_size, max_new_tokens, temperature)
    if not models:
        raise ValueError("No model role given: pass e.g. models=('post_rl',).")
    for role in models:
        pair.model(role)  # raises on an unknown role
    max_new = default_max_new_tokens(pair, task) if max_new_tokens is None else int(max_new_tokens)
    problems = task.sample(split, n, seed=seed)
    ids_of: dict[str, list[list[int]]] = {}
    for role in models:  # every prompt must fit the window: checked before the first batch runs
        ids_of[role] = pair.tokenizer(role)([pair.format_prompt(role, task.prompt(p)) for p in problems], add_special_tokens=True)["input_ids"]
        check_window(pair.model(role), [len(x) for x in ids_of[role]], max_new, f"{role} prompt")
    rows: list[dict[str, Any]] = []
    for role in models:
        model, tok = pair.model(role), pair.tokenizer(role)
        device = next(model.parameters()).device
        prompt_ids = ids_of[role]
        order = sorted(range(len(problems)), key=lambda i: len(prompt_ids[i]))
        done: dict[int, tuple[str, int, bool]] = {}
        for b in tqdm(range(0, len(order), batch_size), desc=f"rollouts {role}", disable=None, leave=False):
            idx = order[b : b + batch_size]
            ids, mask = left_pad([prompt_ids[i] for i in idx], tok.pad_token_id, device)
            res = decode(model, ids, mask, max_new_tokens=max_new, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temperature, seed=seed + b)
            for i, text, length, fin in zip(idx, res.completions(tok), res.lengths.tolist(), res.finished.tolist()):
                done[i] = (text, int(length), bool(fin))
        for i, p in enumerate(problems):
            text, length, fin = done[i]
            rows.append(make_row(task, rollout_id=f"{role}-{split}-{i:05d}", model=role, split=split, index=i, problem=p, completion=text, n_tokens=length, finished=fin))
        acc = sum(r["correct"] for r in rows if r["model"] == role) / len(problems)
        log.info("%s on %d %s problems: accuracy %.3f", role, len(problems), split, acc)
    return rows


def rollouts_dir(path: str | os.PathLike) -> Path:
    """The rollouts directory of ``path``: a run directory (``RUN/rollouts``) or the rollouts directory itself."""
    p = Path(path)
    if (p / ROLLOUTS_FILE).exists():
        return p
    if (p / MANIFEST_NAME).exists():
        try:
            if Manifest.read(p, allow_running=True).kind != "run":
                return p
        except ValueError:
            return p
    return RunDir(p).rollouts


OWNS = (ROLLOUTS_FILE,)


def _stage_config(pair: ModelPair, task, roles: Sequence[str], config: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and inputs of a rollouts stage: the task, its settings and the sampling settings; the generating models."""
    cfg = {"task": task_name(task.name), "task_config": task_config_of(task), **dict(config or {})}
    return cfg, {"fingerprints": {role: pair.fingerprint(role) for role in roles}}


def _write_files(st, rows: Sequence[Mapping[str, Any]], pair: ModelPair) -> Path:
    check_rows(rows, "rows to write")
    path = write_jsonl(st.path(ROLLOUTS_FILE), rows)
    roles = list(dict.fromkeys([*ROLES, *(r["model"] for r in rows)]))
    by_model: dict[str, float] = {}
    for role in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == role]
        by_model[role] = sum(bool(r["correct"]) for r in mine) / len(mine)
    st.complete(
        {ROLLOUTS_FILE: sha256_file(path)},
        models={role: {"path": pair.spec(role).path if role in ROLES else role, "fingerprint": pair.fingerprint(role)} for role in roles},
        extra={"pair": pair.source or pair.name, "n_rows": len(rows), "accuracy": by_model},
    )
    return st.directory


def write_rollouts(directory: str | os.PathLike, rows: Sequence[Mapping[str, Any]], pair: ModelPair, task, config: Mapping[str, Any] | None = None, *, force: bool = False) -> Path:
    """Write ``rollouts.jsonl`` and its manifest into ``directory`` (e.g. ``RunDir(run).rollouts``), atomically.

    ``config`` holds the generation settings (split, n, seed, models, temperature, ...). Rollouts
    with other settings already there are refused (``force=True`` replaces them); with the same
    settings they are replaced by ``rows``. To generate only when needed, use :func:`build_rollouts`.
    """
    from latentreason.stage import REUSE, open_stage

    if not rows:
        raise ValueError("No rollouts to write: generate at least one.")
    cfg, inputs = _stage_config(pair, task, list(dict.fromkeys(r["model"] for r in rows)), config)
    with open_stage(directory, ROLLOUTS_KIND, cfg, inputs, owns=OWNS, force=force) as st:
        if st.state == REUSE:
            st.restart()
        return _write_files(st, rows, pair)


def build_rollouts(
    pair: ModelPair,
    task,
    directory: str | os.PathLike,
    split: str,
    n: int,
    *,
    seed: int = 0,
    models: Sequence[str] = ("post_rl",),
    temperature: float = 0.0,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    force: bool = False,
) -> tuple[Path, bool]:
    """The rollouts stage: generate into ``directory`` unless rollouts with these settings are there.

    Returns ``(directory, reused)``. Rollouts made with other settings or models are refused
    with the differing keys named (``force=True`` replaces them).
    """
    from latentreason.stage import REUSE, open_stage

    task = task_for_pair(pair, task) if isinstance(task, str) else task
    max_new = default_max_new_tokens(pair, task) if max_new_tokens is None else int(max_new_tokens)
    roles = list(models)
    config = {"split": split, "n": n, "seed": seed, "models": roles, "temperature": temperature, "batch_size": batch_size, "max_new_tokens": max_new}
    for role in roles:
        pair.model(role)  # raises on an unknown role, before the stage starts
    cfg, inputs = _stage_config(pair, task, roles, config)
    with open_stage(directory, ROLLOUTS_KIND, cfg, inputs, owns=OWNS, force=force) as st:
        if st.state == REUSE:
            return st.directory, True
        rows = generate_rollouts(pair, task, split, n, seed=seed, models=roles, temperature=temperature, batch_size=batch_size, max_new_tokens=max_new)
        return _write_files(st, rows, pair), False


def read_rollouts(path: str | os.PathLike) -> tuple[Manifest, list[dict[str, Any]]]:
    """Manifest and rows of a rollouts artifact (``RUN`` or ``RUN/rollouts``), hash-checked."""
    d = rollouts_dir(path)
    if not d.exists():
        raise FileNotFoundError(f"No rollouts at {path}: expected {d}/{ROLLOUTS_FILE}. Run `latentreason rollouts --out {path}` first.")
    man = Manifest.read(d, kind=ROLLOUTS_KIND)
    man.verify(d)
    rows = read_jsonl(d / ROLLOUTS_FILE)
    if not rows:
        raise ValueError(f"{d / ROLLOUTS_FILE} holds no rollouts; regenerate it with `latentreason rollouts --n N`.")
    check_rows(rows, d / ROLLOUTS_FILE)
    return man, rows


ROW_FIELDS: dict[str, type | tuple[type, ...]] = {"id": str, "model": str, "prompt": str, "completion": str}  # what every reader of rollouts uses


def check_rows(rows: Sequence[Any], path: str | os.PathLike = ROLLOUTS_FILE) -> None:
    """Refuse rollout rows that lack a field the later stages read, naming the row, the field and the fix."""
    fix = "Regenerate the rollouts with `latentreason rollouts`, or add the field to every row (see latentreason.rollouts.make_row)."
    seen: set[str] = set()
    for i, r in enumerate(rows, 1):
        if not isinstance(r, Mapping):
            raise ValueError(f"{path}, row {i}: expected a JSON object, got {type(r).__name__}. {fix}")
        for key, typ in ROW_FIELDS.items():
            if key not in r:
                raise ValueError(f"{path}, row {i} (id {r.get('id')!r}): field {key!r} is missing. {fix}")
            if not isinstance(r[key], typ):
                raise ValueError(f"{path}, row {i} (id {r.get('id')!r}): field {key!r} must be a string, got {type(r[key]).__name__}. {fix}")
        sents = r.get("sentences")
        if sents is not None and not (isinstance(sents, list) and all(isinstance(x, Mapping) and {"start", "end"} <= set(x) for x in sents)):
            raise ValueError(f"{path}, row {i} (id {r['id']!r}): field 'sentences' must be a list of {{start, end, text, ...}} records. {fix}")
        if r["id"] in seen:
            raise ValueError(f"{path}, row {i}: id {r['id']!r} repeats an earlier row's; ids must be unique. {fix}")
        seen.add(r["id"])
