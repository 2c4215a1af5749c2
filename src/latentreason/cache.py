"""Activation cache: per-token activations of each model on the same rollout texts, as resumable shards.

Each model reads ``pair.format_prompt(role, prompt) + completion``, tokenized with its own
tokenizer: the formatted prompt alone (as in generation, so BOS and template tokens match),
then the completion without special tokens, whose offsets give each sentence's token span.
Only completion tokens are stored, plus each rollout's last prompt token (the position that
predicts the first completion token).

An activations directory holds::

    manifest.json            kind "activations": settings, inputs (rollouts digest, fingerprints), sha256 of every file;
                             written with status "running" when the run starts (see latentreason.stage)
    index.json               rollout rows (with sentences) and, per model, where their tokens lie
    shard_00000.safetensors  "{role}/{site}": [n_tokens, d_model] completion tokens of the shard's rollouts
                             "{role}/{site}/last_prompt": [n_rollouts, d_model]
    progress.json            only while a run is unfinished (finished shards with their hashes)
    .lock                    only while a process writes the cache (pid, command, start time)

Shards cover consecutive rollouts and close once they hold ``shard_tokens`` completion tokens
(of the model with most), so boundaries depend only on the inputs: a killed run restarts after
its last finished shard and yields byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentreason.backends import get_backend
from latentreason.fingerprint import hidden_size_of
from latentreason.io import atomic_write, read_json, sha256_file, write_json, write_text
from latentreason.manifest import MANIFEST_NAME, Manifest, UnfinishedArtifactError
from latentreason.pair import ModelPair, resolve_dtype
from latentreason.rollouts import check_task, read_rollouts, rollouts_dir
from latentreason.segment import sentences_from_records, split_sentences, token_spans
from latentreason.sites import HookSite, num_layers, parse_sites, resolve, site_at_depth, split_site_names
from latentreason.stage import RESUME, REUSE, open_stage

log = logging.getLogger(__name__)

KIND = "activations"
INDEX = "index.json"
PROGRESS = "progress.json"
DTYPES = ("float32", "bfloat16", "float16")


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


@dataclass(frozen=True)
class CacheConfig:
    """Settings of a cache run; any change makes a different cache."""

    sites: tuple[str, ...]  # canonical names, e.g. ("resid_post.2",)
    models: tuple[str, ...] = ("base", "post_rl")
    dtype: str = "float32"  # storage dtype
    batch_size: int = 32  # rollouts per forward pass (part of the settings: batching changes float rounding)
    shard_tokens: int = 32768  # completion tokens per shard (of the model with most)
    backend: str = "hf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(str(s) for s in parse_sites(list(self.sites))))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ValueError("No model role given: pass e.g. --models base,post_rl.")
        if len(set(self.models)) != len(self.models) or len(set(self.sites)) != len(self.sites):
            raise ValueError(f"Duplicate model or site in models={list(self.models)}, sites={list(self.sites)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")
        if self.batch_size <= 0 or self.shard_tokens <= 0:
            raise ValueError(f"batch_size={self.batch_size} and shard_tokens={self.shard_tokens} must be positive.")


@dataclass
class _Tokens:
    """Where one rollout's tokens lie for one model (token ids are re-made per shard, so memory stays flat)."""

    prompt_len: int
    length: int  # completion tokens
    spans: list[tuple[int, int]]  # per sentence, completion-relative
    offset: int = 0  # first row of this rollout's tokens in its shard tensor


@dataclass
class _Plan:
    shards: list[tuple[int, int]]  # rollout ranges [a, b)
    tokens: dict[str, list[_Tokens]] = field(default_factory=dict)  # role -> per rollout
    reads_as: dict[str, str] = field(default_factory=dict)  # role -> first role that reads identical token ids


def _reader_key(pair: ModelPair, role: str) -> tuple:
    """Roles with equal keys read identical token ids (same tokenizer, same prompt format), so they are tokenized once."""
    spec, tok = pair.spec(role), pair.tokenizer(role)
    backend = getattr(tok, "backend_tokenizer", None)
    tok_id = hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else id(tok)
    return (tok_id, spec.prompt_template, spec.chat_template, getattr(tok, "chat_template", None) if spec.chat_template else None)


def _row_sentences(row: dict[str, Any]):
    recs = row.get("sentences")
    return sentences_from_records(recs) if recs is not None else split_sentences(row["completion"])


class _Enc(NamedTuple):
    ids: list[int]
    offsets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


def _encode(tok, texts: list[str], add_special_tokens: bool) -> list:
    """Encodings (``.ids``, ``.offsets``, ``len``) of each text: the Rust tokenizer's own when that is safe,
    as ``tok(texts)`` computes them but without its Python-side conversion, which dominates at scale."""
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"Tokenizer {type(tok).__name__} is not a fast tokenizer: caching needs offset mappings. Load it with use_fast=True.")
    backend = tok.backend_tokenizer
    if backend.truncation is None and backend.padding is None:
        return backend.encode_batch(texts, add_special_tokens=add_special_tokens)
    enc = tok(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return [_Enc(i, o) for i, o in zip(enc["input_ids"], enc["offset_mapping"])]


def _prompts(pair: ModelPair, role: str, rows: list[dict[str, Any]]) -> list[str]:
    return [pair.format_prompt(role, r["prompt"]) for r in rows]


def _layout(pair: ModelPair, role: str, rows: list[dict[str, Any]]) -> list[_Tokens]:
    """Prompt length, completion length and sentence token spans of each row for model ``role``."""
    tok = pair.tokenizer(role)
    prompts = _encode(tok, _prompts(pair, role, rows), add_special_tokens=True)
    comps = _encode(tok, [r["completion"] for r in rows], add_special_tokens=False)
    out = []
    for r, p, c in zip(rows, prompts, comps):
        if not len(p):
            raise ValueError(f"Rollout {r['id']}: its prompt tokenizes to nothing for {role}; the cache needs a prompt token before the completion.")
        out.append(_Tokens(len(p), len(c), token_spans(c.offsets, _row_sentences(r))))
    return out


def _token_ids(pair: ModelPair, role: str, rows: list[dict[str, Any]]) -> list[list[int]]:
    """Token ids of each row for model ``role``: the formatted prompt (as in generation), then the completion."""
    tok = pair.tokenizer(role)
    prompts = _encode(tok, _prompts(pair, role, rows), add_special_tokens=True)
    comps = _encode(tok, [r["completion"] for r in rows], add_special_tokens=False)
    return [p.ids + c.ids for p, c in zip(prompts, comps)]


def _plan(pair: ModelPair, rows: list[dict[str, Any]], cfg: CacheConfig, chunk: int = 1024) -> _Plan:
    first: dict[tuple, str] = {}
    reads_as = {role: first.setdefault(_reader_key(pair, role), role) for role in cfg.models}
    toks: dict[str, list[_Tokens]] = {}
    for role in cfg.models:  # roles that read the same ids share one layout
        if reads_as[role] == role:
            toks[role] = [t for c in range(0, len(rows), chunk) for t in _layout(pair, role, rows[c : c + chunk])]
        else:
            toks[role] = toks[reads_as[role]]
    shards, a, count = [], 0, 0
    for i in range(len(rows)):
        count += max(toks[role][i].length for role in cfg.models)
        if count >= cfg.shard_tokens or i == len(rows) - 1:
            shards.append((a, i + 1))
            a, count = i + 1, 0
    for role in set(reads_as.values()):  # within a shard, rows are laid out in the order they are batched (by length)
        for a, b in shards:
            offset = 0
            for i in _batch_order(toks[role], a, b):
                toks[role][i].offset = offset
                offset += toks[role][i].length
    return _Plan(shards, toks, reads_as)


def _batch_order(items: list[_Tokens], a: int, b: int) -> list[int]:
    return sorted(range(a, b), key=lambda i: items[i].prompt_len + items[i].length)  # stable: ties keep rollout order


def _right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[Tensor, Tensor]:
    """Right padding keeps every real token at its unpadded position, so no position_ids are needed."""
    rows = [torch.tensor(s, dtype=torch.long) for s in seqs]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0)
    return ids.to(device), mask.to(device)


def _shard_ids(pair: ModelPair, rows: list[dict[str, Any]], plan: _Plan, k: int) -> dict[str, dict[int, list[int]]]:
    """Token ids of shard ``k``'s rows for each role (tokenized once per group of roles that read the same ids)."""
    a, b = plan.shards[k]
    by_reader = {src: dict(zip(range(a, b), _token_ids(pair, src, rows[a:b]))) for src in set(plan.reads_as.values())}
    return {role: by_reader[src] for role, src in plan.reads_as.items()}


def _batches(pair: ModelPair, plan: _Plan, k: int, role: str, ids_of: dict[int, list[int]], batch_size: int) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """The forward batches of shard ``k`` for ``role``: ``(rollout indices, input_ids, attention_mask)``, right-padded."""
    a, b = plan.shards[k]
    device = next(pair.model(role).parameters()).device
    pad = pair.tokenizer(role).pad_token_id or 0
    order = _batch_order(plan.tokens[role], a, b)
    for c in range(0, len(order), batch_size):
        idx = order[c : c + batch_size]
        yield (idx, *_right_pad([ids_of[i] for i in idx], pad, device))


@torch.no_grad()
def _run_shard(pair: ModelPair, rows: list[dict[str, Any]], plan: _Plan, k: int, cfg: CacheConfig, backend, sites: list[HookSite]) -> dict[str, Tensor]:
    """All tensors of shard ``k``: completion tokens per (role, site), in batch order, and last prompt tokens.

    Activations are written straight into preallocated shard tensors, so a shard costs its own size once.
    """
    a, b = plan.shards[k]
    dtype = resolve_dtype(cfg.dtype)
    shard_ids = _shard_ids(pair, rows, plan, k)
    out: dict[str, Tensor] = {}
    for role in cfg.models:
        model, items = pair.model(role), plan.tokens[role]
        total = sum(t.length for t in items[a:b])
        for idx, ids, mask in _batches(pair, plan, k, role, shard_ids[role], cfg.batch_size):
            device = ids.device
            acts = backend.activations(model, ids, mask, sites)  # {site: [batch, pos, d_model]}
            plen = torch.tensor([items[i].prompt_len for i in idx], device=device)
            pos = torch.arange(ids.shape[1], device=device)
            sel = (pos[None, :] >= plen[:, None]) & mask.bool()  # completion tokens, row by row, in offset order
            start, n = items[idx[0]].offset, sum(items[i].length for i in idx)
            rows_in_shard = torch.tensor([i - a for i in idx])
            for s in sites:
                x, key = acts[str(s)], f"{role}/{s}"
                if key not in out:
                    out[key] = torch.empty((total, x.shape[-1]), dtype=dtype)
                    out[f"{key}/last_prompt"] = torch.empty((b - a, x.shape[-1]), dtype=dtype)
                out[key][start : start + n] = x[sel].to(dtype).cpu()
                out[f"{key}/last_prompt"][rows_in_shard] = x[torch.arange(len(idx), device=device), plen - 1].to(dtype).cpu()
            del acts
    return out


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def _write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """Stream tensors into a safetensors file without copying them (``safetensors.save_file`` copies
    each to bytes); returns the file's sha256, computed on the way."""
    header: dict[str, Any] = {"__metadata__": metadata}
    pos = 0
    for key in sorted(tensors):
        t = tensors[key]
        header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + t.numel() * t.element_size()]}
        pos += t.numel() * t.element_size()
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # safetensors aligns the data to 8 bytes
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in [len(head).to_bytes(8, "little"), head, *(memoryview(tensors[k].contiguous().view(torch.uint8).numpy()) for k in sorted(tensors) if tensors[k].numel())]:
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _settings(pair: ModelPair, rollouts_dir: Path, cfg: CacheConfig, task: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cache stage's config (what it computes) and inputs (the rollouts artifact it reads, the models' fingerprints)."""
    from latentreason.stage import artifact_digest, canonical

    config = {"sites": list(cfg.sites), "models": list(cfg.models), "dtype": cfg.dtype, "batch_size": cfg.batch_size, "shard_tokens": cfg.shard_tokens, "backend": cfg.backend, "task": task}
    inputs = {"rollouts": artifact_digest(rollouts_dir), "fingerprints": {role: pair.fingerprint(role) for role in cfg.models}}
    return canonical(config), canonical(inputs)


OWNS = ("shard_*.safetensors", INDEX, PROGRESS)


def _clean_temp(out: Path) -> None:
    for p in out.iterdir():  # temporary files of a killed run (io.atomic_write names them .<name>.<random>.tmp)
        if p.name.startswith(".") and p.name.endswith(".tmp") and any(p.name.startswith(f".{n}") for n in (MANIFEST_NAME, INDEX, PROGRESS, "shard_")):
            p.unlink(missing_ok=True)


def cache_activations(
    pair: ModelPair,
    rollouts: str | os.PathLike,
    out: str | os.PathLike,
    sites: str | Sequence[str | HookSite],
    models: Sequence[str] = ("base", "post_rl"),
    *,
    dtype: str = "float32",
    batch_size: int = 32,
    shard_tokens: int = 32768,
    backend: str | Any = "hf",
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Cache activations of ``models`` at ``sites`` on the rollouts at ``rollouts`` (``RUN`` or ``RUN/rollouts``) into ``out``.

    ``sites`` are names (``resid_post.2``) or depth fractions of the base model (``resid_post@0.4``).
    Resumes an unfinished run in ``out``; returns ``out`` when the cache is complete. A cache
    with other settings, or made from other rollouts, is refused with the differing keys named
    (``force=True`` replaces it); ``out`` is locked while written.
    Models run on the device they are on. ``backend`` is a backend name or a configured backend,
    e.g. ``get_backend("nnsight", remote=True)`` to run the forwards on NDIF.

    Example:
        >>> out = cache_activations(pair, "runs/demo", "activations/demo", "resid_post.1")  # doctest: +SKIP
        >>> ActivationCache.open(out).sentence_pooled("resid_post.1", "post_rl").shape  # doctest: +SKIP
        torch.Size([n_sentences, d_model])
    """
    bk = None if isinstance(backend, str) else backend  # a configured backend instance (e.g. nnsight with remote=True)
    name = backend if bk is None else getattr(bk, "name", type(bk).__name__)
    n_layers = num_layers(pair.base_model)  # a depth fraction (resid_post@0.4) names a layer of the base model, as in presets
    cfg = CacheConfig(tuple(str(site_at_depth(s, n_layers)) for s in split_site_names(sites)), tuple(models), dtype, batch_size, shard_tokens, name)
    site_objs = [HookSite.parse(s) for s in cfg.sites]
    for role in cfg.models:
        model = pair.model(role)  # raises on an unknown role
        for s in site_objs:
            resolve(model, s)  # raises on an unknown site or layer, before any work
    bk = get_backend(cfg.backend) if bk is None else bk
    rdir = rollouts_dir(rollouts)
    rman, rows = read_rollouts(rdir)
    check_task(pair, str(rman.config.get("task")), what="rollouts' task")
    for role in rman.models:
        if role in cfg.models or role in ("base", "post_rl"):
            rman.check_model(role, pair.fingerprint(role), what=f"rollouts run {rdir}")
    out = Path(out)
    config, inputs = _settings(pair, rdir, cfg, rman.config.get("task"))
    with open_stage(out, KIND, config, inputs, owns=OWNS, force=force) as st:
        if st.state == REUSE:
            log.info("%s is already a complete cache with these settings", out)
            return out
        _clean_temp(out)
        kept = read_json(out / PROGRESS).get("shards", []) if st.state == RESUME and (out / PROGRESS).exists() else []
        _build(pair, rows, cfg, bk, site_objs, st, kept, rdir, progress)
    return out


def _build(pair: ModelPair, rows: list[dict[str, Any]], cfg: CacheConfig, bk, site_objs: list[HookSite], st, kept: list[dict[str, Any]], rdir: Path, progress: bool) -> None:
    out = st.directory
    plan = _plan(pair, rows, cfg)
    done: list[dict[str, Any]] = []
    for k, rec in enumerate(kept):  # keep the finished prefix that still matches the plan and its hashes
        p = out / shard_name(k)
        if k >= len(plan.shards) or rec.get("file") != p.name or rec.get("rollouts") != list(plan.shards[k]) or not p.exists() or sha256_file(p) != rec.get("sha256"):
            break
        done.append(rec)
    if done:
        log.info("resuming %s after %d finished shards", out, len(done))
    bar = tqdm(total=len(plan.shards), initial=len(done), desc="cache shards", disable=None if progress else True)
    for k in range(len(done), len(plan.shards)):
        tensors = _run_shard(pair, rows, plan, k, cfg, bk, site_objs)
        digest: list[str] = []
        path = atomic_write(out / shard_name(k), lambda p: digest.append(_write_safetensors(p, tensors, {"format": "pt", "shard": str(k)})))
        del tensors
        done.append({"file": path.name, "sha256": digest[-1], "rollouts": list(plan.shards[k])})
        write_json(out / PROGRESS, {"shards": done})
        bar.update(1)
    bar.close()
    _finish(pair, rows, plan, cfg, st, done, rdir)


def _finish(pair: ModelPair, rows, plan: _Plan, cfg: CacheConfig, st, done, rdir: Path) -> None:
    out = st.directory
    shard_of = {i: k for k, (a, b) in enumerate(plan.shards) for i in range(a, b)}
    index_rows = []
    for i, r in enumerate(rows):
        a = plan.shards[shard_of[i]][0]
        toks = {role: {"offset": t.offset, "length": t.length, "prompt_tokens": t.prompt_len, "spans": [list(s) for s in t.spans]} for role in cfg.models for t in [plan.tokens[role][i]]}
        index_rows.append({**r, "sentences": r.get("sentences") or [s.to_dict() | {"label": None} for s in _row_sentences(r)], "shard": shard_of[i], "row": i - a, "tokens": toks})
    write_text(out / INDEX, json.dumps({"rollouts": index_rows}, separators=(",", ":")) + "\n")  # compact: the C encoder, 10x faster than indent
    files = {rec["file"]: rec["sha256"] for rec in done}
    files[INDEX] = sha256_file(out / INDEX)
    st.complete(
        files,
        models={role: {"path": pair.spec(role).path if role in ("base", "post_rl") else role, "fingerprint": pair.fingerprint(role)} for role in cfg.models},
        extra={
            "rollouts": str(rdir),
            "n_rollouts": len(rows),
            "n_sentences": sum(len(r["sentences"]) for r in index_rows),
            "n_tokens": {role: sum(t.length for t in plan.tokens[role]) for role in cfg.models},
            "d_model": {role: hidden_size_of(pair.model(role)) for role in cfg.models},
            "n_layers": {role: num_layers(pair.model(role)) for role in dict.fromkeys(("base", *cfg.models))},  # resolves depth fractions (resid_post@0.4) later
            "shards": done,
            "index": INDEX,
            "device": str(next(pair.model(cfg.models[0]).parameters()).device),
        },
    )
    (out / PROGRESS).unlink(missing_ok=True)


STRATEGY_ROLES = ("post_rl",)  # strategies are read from the traces the post-RL model wrote itself


def parse_roles(roles: str | Sequence[str] | None) -> tuple[str, ...]:
    """Generator roles as a tuple: ``"post_rl,base"`` or a sequence; None -> :data:`STRATEGY_ROLES`."""
    if roles is None:
        return STRATEGY_ROLES
    items = [r.strip() for r in roles.split(",")] if isinstance(roles, str) else [str(r).strip() for r in roles]
    out = tuple(dict.fromkeys(r for r in items if r))
    if not out:
        raise ValueError(f"roles={roles!r} names no model role: give e.g. 'post_rl' or 'post_rl,base'.")
    return out


def parse_pooling(pooling: str) -> int | None:
    """``"mean"`` -> None (all tokens); ``"head:N"`` -> N (the first N tokens). The one definition of sentence pooling."""
    if pooling == "mean":
        return None
    if isinstance(pooling, str) and pooling.startswith("head:") and pooling[5:].isdigit() and int(pooling[5:]) > 0:
        return int(pooling[5:])
    raise ValueError(f"Unknown sentence pooling {pooling!r}: use 'mean' or 'head:N' (mean over the first N tokens), e.g. 'head:3'.")


class ActivationCache:
    """Read a finished activations directory, one shard at a time.

    ``tokens`` and ``iter_rollouts`` return tensors in the stored dtype; the sentence
    methods return float32. Shards are hash-checked the first time they are read.

    Example:
        >>> cache = ActivationCache.open("activations/demo")  # doctest: +SKIP
        >>> X = cache.sentence_pooled("resid_post.1", "post_rl")  # [n_sentences, d_model]  # doctest: +SKIP
    """

    def __init__(self, directory: Path, manifest: Manifest, index: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self._rollouts: list[dict[str, Any]] = index["rollouts"]
        self._pos = {r["id"]: i for i, r in enumerate(self._rollouts)}
        self._sentences: list[dict[str, Any]] | None = None
        self._verified: set[str] = set()
        self._loaded: tuple[int, dict[str, Tensor]] = (-1, {})  # tensors read from the current shard

    @classmethod
    def open(cls, directory: str | os.PathLike) -> ActivationCache:
        """Open and validate a cache; shards are checked lazily (or all at once with :meth:`verify`)."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"No activation cache at {d}. Run `latentreason cache --out {d}` first.")
        if not (d / MANIFEST_NAME).exists() and (d / PROGRESS).exists():
            raise FileNotFoundError(f"{d} holds an unfinished cache (no {MANIFEST_NAME}); re-run the same `latentreason cache` command to finish it.")
        try:
            man = Manifest.read(d, kind=KIND)
        except UnfinishedArtifactError:
            raise UnfinishedArtifactError(f"{d} holds an unfinished cache; re-run the same `latentreason cache` command to finish it.") from None
        digest = man.files.get(INDEX)
        if digest is None:
            raise ValueError(f"{d / MANIFEST_NAME} lists no {INDEX}; rebuild the cache.")
        if not (d / INDEX).exists():
            raise FileNotFoundError(f"{d / INDEX} is missing; rebuild the cache.")
        if sha256_file(d / INDEX) != digest:
            raise ValueError(f"{d / INDEX} is corrupt (sha256 differs from {MANIFEST_NAME}); rebuild the cache.")
        return cls(d, man, read_json(d / INDEX))

    def generated_by(self, roles: str | Sequence[str] | None = None) -> ActivationCache:
        """The same cache restricted to rollouts that model ``roles`` generated (default: post-RL only).

        Every view (``rollouts``, ``sentences``, ``sentence_pooled``, ``iter_rollouts``, ...) of the
        result covers only those rollouts, in the same order; activations of every cached model
        stay readable. Raises when no rollout matches, naming the roles the cache holds.

        Example:
            >>> post = ActivationCache.open("activations/demo").generated_by("post_rl")  # doctest: +SKIP
        """
        want = parse_roles(roles)
        keep = [r for r in self._rollouts if r.get("model") in want]
        if not keep:
            have = Counter(str(r.get("model")) for r in self._rollouts)
            held = ", ".join(f"{n} from {m}" for m, n in sorted(have.items())) or "no rollouts"
            raise ValueError(
                f"The activation cache {self.directory} holds no rollouts generated by {', '.join(want)} (it holds {held}). "
                f"Strategies are read from the post-RL model's own traces: generate them with `latentreason rollouts --models post_rl`, "
                f"or pass --roles (roles=) naming the generators to read, e.g. --roles {','.join(sorted(have))}."
            )
        if len(keep) == len(self._rollouts):
            view = self
        else:
            view = ActivationCache(self.directory, self.manifest, {"rollouts": keep})
            view._verified = self._verified  # shared: a shard checked once is checked for both
        return view

    @property
    def rollout_roles(self) -> dict[str, int]:
        """How many rollouts each model role generated, e.g. ``{"post_rl": 40, "base": 40}``."""
        return dict(Counter(str(r.get("model")) for r in self._rollouts))

    # --- what the cache holds -------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.manifest.config["sites"])

    @property
    def models(self) -> list[str]:
        return list(self.manifest.config["models"])

    @property
    def rollouts(self) -> list[dict[str, Any]]:
        """Rollout rows (with ``sentences``), plus ``shard`` and per-model ``tokens`` {offset, length, prompt_tokens, spans}."""
        return self._rollouts

    @property
    def sentences(self) -> list[dict[str, Any]]:
        """Every sentence in rollout order: ``{id, rollout_id, rollout_model, index, start, end, text, label, tokens: {model: [start, end)}}``.

        ``rollout_model`` is the role that generated the rollout; token spans count completion
        tokens of each cached model (0 = first completion token), end exclusive.
        """
        if self._sentences is None:
            self._sentences = [
                {"id": f"{r['id']}/{s['index']}", "rollout_id": r["id"], "rollout_model": r.get("model"), "index": s["index"], "start": s["start"], "end": s["end"], "text": s["text"], "label": s.get("label"), "tokens": {m: r["tokens"][m]["spans"][j] for m in self.models}}
                for r in self._rollouts
                for j, s in enumerate(r["sentences"])
            ]
        return self._sentences

    def fingerprint(self, model: str) -> str:
        return self.manifest.models[self._model(model)]["fingerprint"]

    def check_model(self, model: str, fingerprint: str) -> None:
        """Refuse a model other than the one this cache was made with."""
        self.manifest.check_model(self._model(model), fingerprint, what=f"activation cache {self.directory}")

    def d_model(self, model: str) -> int:
        return int(self.manifest.extra["d_model"][self._model(model)])

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256 (the error names the file)."""
        self.manifest.verify(self.directory)
        self._verified.update(n for n in self.manifest.files if n != INDEX)

    # --- reading -------------------------------------------------------------------------
    def tokens(self, site: str | HookSite, model: str, rollout_id: str) -> Tensor:
        """Completion-token activations of one rollout: ``[T_completion, d_model]``."""
        key, model = self._key(site, model), self._model(model)
        if rollout_id not in self._pos:
            raise KeyError(f"No rollout {rollout_id!r} in {self.directory}.")
        r = self._rollouts[self._pos[rollout_id]]
        t = r["tokens"][model]
        return self._tensor(r["shard"], key)[t["offset"] : t["offset"] + t["length"]].clone()

    def iter_rollouts(self, site: str | HookSite, model: str) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(rollout_id, [T_completion, d_model])`` in rollout order, reading one shard at a time.

        The tensors are views of the loaded shard: clone one before editing it.
        """
        key, model = self._key(site, model), self._model(model)
        for r in self._rollouts:
            t = r["tokens"][model]
            yield r["id"], self._tensor(r["shard"], key)[t["offset"] : t["offset"] + t["length"]]

    def sentence_pooled(self, site: str | HookSite, model: str, pooling: str = "mean") -> Tensor:
        """Pooled activation of each sentence: ``[n_sentences, d_model]`` float32, in :attr:`sentences` order.

        ``pooling`` (see :func:`parse_pooling`): ``"mean"`` over all the sentence's tokens, or
        ``"head:N"`` over its first N tokens — the opening words, where a reasoning strategy
        announces itself ("Wait,", "Let me check", "S:").
        """
        head = parse_pooling(pooling)
        key, model = self._key(site, model), self._model(model)
        out = []
        for r, t, x in self._segmented(key, model):
            cs = torch.cat([x.new_zeros((1, x.shape[1]), dtype=torch.float64), x.double().cumsum(0)])  # float64: exact enough for long rows
            s, e = torch.tensor(t["spans"]).T
            if head is not None:
                e = torch.minimum(e, s + head)
            out.append(((cs[e] - cs[s]) / (e - s)[:, None]).float())
        return torch.cat(out) if out else torch.empty((0, self.d_model(model)))

    def sentence_start_tokens(self, site: str | HookSite, model: str) -> Tensor:
        """Activation at the token just before each sentence's first token: ``[n_sentences, d_model]`` float32.

        That is the position where the model, having read everything before the sentence,
        predicts its first token (it decides which sentence comes next); for a completion's
        first sentence it is the last prompt token. In :attr:`sentences` order.
        """
        key, model = self._key(site, model), self._model(model)
        out = []
        for r, t, x in self._segmented(key, model):
            lp = self._tensor(r["shard"], f"{key}/last_prompt")[r["row"]][None]
            full = torch.cat([lp, x])  # row 0 is the last prompt token, row j + 1 completion token j
            out.append(full[torch.tensor([s for s, _ in t["spans"]])].float())
        return torch.cat(out) if out else torch.empty((0, self.d_model(model)))

    # --- internals -----------------------------------------------------------------------
    def _segmented(self, key: str, model: str) -> Iterator[tuple[dict[str, Any], dict[str, Any], Tensor]]:
        """``(rollout, its token record, completion activations [T, d])`` for each rollout that has sentences."""
        for r in self._rollouts:
            t = r["tokens"][model]
            if t["spans"]:
                yield r, t, self._tensor(r["shard"], key)[t["offset"] : t["offset"] + t["length"]]

    def _model(self, model: str) -> str:
        if model not in self.models:
            raise ValueError(f"This cache holds models {self.models}, not {model!r}; re-run `latentreason cache --models ...` to add it.")
        return model

    def _key(self, site: str | HookSite, model: str) -> str:
        name = str(HookSite.parse(site))
        if name not in self.sites:
            raise ValueError(f"This cache holds sites {self.sites}, not {name!r}; re-run `latentreason cache --sites {name}` into another --out.")
        return f"{self._model(model)}/{name}"

    def _tensor(self, shard: int, key: str) -> Tensor:
        """One tensor of one shard; tensors of the last shard read are kept, so a pass over rollouts reads each shard once."""
        if self._loaded[0] == shard and key in self._loaded[1]:
            return self._loaded[1][key]
        name = shard_name(shard)
        path = self.directory / name
        if name not in self._verified:
            if not path.exists():
                raise FileNotFoundError(f"Shard {path} is missing; re-run the cache command into a fresh --out (or restore the file).")
            if sha256_file(path) != self.manifest.files.get(name):
                raise ValueError(f"Shard {path} is corrupt or truncated (sha256 differs from {MANIFEST_NAME}); delete the cache and re-run.")
            self._verified.add(name)
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                x = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"Shard {path} cannot be read ({e}); delete the cache and re-run.") from e
        if self._loaded[0] != shard:
            self._loaded = (shard, {})
        self._loaded[1][key] = x
        return x
