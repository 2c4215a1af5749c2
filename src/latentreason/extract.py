"""Steering vectors for the base model, one per taxonomy category, from the activation cache.

Three methods, all at one hook site of the BASE model, all read at the *decision position* of
a sentence: the token just before its first token, where the model decides what comes next
(``ActivationCache.sentence_start_tokens``).

* ``diffmeans`` — mean base activation at the decision positions of category c, minus the mean
  base activation over all completion tokens of the cache.
* ``probe`` — one-vs-rest logistic regression (category c against the other categories) on the
  decision-position activations, standardised per feature; the vector is the probe's activation
  *pattern* ``cov(X) w_raw`` (Haufe et al. 2014; ``w_raw = w / std`` is the filter that reads the
  category out), unit-normalised and rescaled to category c's diffmeans norm, so probe and
  diffmeans vectors differ in direction only. Added to the stream, the filter can push the
  opposite way (on the organism the filter's ``answer`` vector lowered P(A)); the pattern is
  what the category looks like in activation space.
* ``optimized`` — gradient-trained: maximise the base model's log-likelihood of the post-RL
  model's sentences of category c given their context (cross-entropy on the sentence's tokens),
  with ``v`` added at the site at the decision position only (``positions="decision"``, the
  default: where a router steers, so the vector learns *which* sentence to start), or at the
  decision position and every sentence token but the last (``positions="sentence"``: all
  positions whose outputs predict the sentence). Adam; ``||v||`` capped; a held-out split of
  rollouts decides early stopping and the returned vector; seeded. On the organism the decision
  form lowers held-out CE two to three times more and is far more specific (see the report).
  Training scales with the model and the traces: logits are computed only at target positions
  (the body runs to its final hidden states, the LM head sees only the rows the loss reads),
  examples are cut at their last target and sorted by length, and each step runs as forward
  passes of at most ``max_tokens`` padded tokens (:func:`vector_loss`).
* ``--bias`` adds a general ``bias`` vector trained with the same objective over whole post-RL
  completions (whatever ``method`` is; its ``method`` field is ``"bias"``).

Core functions are array-in / array-out (:func:`diffmeans_directions`, :func:`probe_directions`,
:func:`optimize_vector`); :func:`extract_vectors` is the thin glue to the cache and taxonomy.
:func:`specificity_matrix` measures whether vector i raises the probability of strategy i's
marker token at the decision positions.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentreason.fingerprint import hidden_size_of, model_fingerprint
from latentreason.hooks import intervene
from latentreason.sites import HookSite, is_depth_site, lm_head_of, resolve, site_in
from latentreason.vectors import SteeringVector

log = logging.getLogger(__name__)

EXTRACT_METHODS = ("diffmeans", "probe", "optimized")
POSITIONS = ("decision", "sentence")  # where an optimised category vector is added during training
VECTORS_KIND = "vectors"
DEFAULT_BATCH_SIZE = 32  # optimised vectors: examples per optimiser step
DEFAULT_MAX_TOKENS = 4096  # optimised vectors: padded tokens per forward pass (bounds peak memory; the result does not depend on it)
LOGIT_CHUNK_ELEMENTS = 1 << 24  # logits alive at once in the loss (64 MB in float32): 341 target rows of a 49,152-token vocabulary


# ------------------------------------------------------------------ closed-form methods


def _group(labels: Sequence[Any]) -> dict[Any, np.ndarray]:
    labels = list(labels)
    cats = sorted({l for l in labels if l is not None}, key=str)
    return {c: np.flatnonzero(np.array([l == c for l in labels], dtype=bool)) for c in cats}


def diffmeans_directions(starts: Tensor, labels: Sequence[Any], background: Tensor) -> dict[Any, Tensor]:
    """Per category c: ``mean(starts[labels == c]) - background``.

    Args:
        starts: ``[n, d_model]`` activations at the decision positions.
        labels: category of each row (``None`` rows are ignored).
        background: ``[d_model]`` mean activation over all completion tokens.

    Example:
        >>> d = diffmeans_directions(torch.tensor([[1., 0.], [3., 0.], [0., 2.]]), ["a", "a", "b"], torch.zeros(2))
        >>> d["a"].tolist(), d["b"].tolist()
        ([2.0, 0.0], [0.0, 2.0])
    """
    if starts.ndim != 2 or len(labels) != starts.shape[0]:
        raise ValueError(f"starts {tuple(starts.shape)} and {len(labels)} labels must align: one label per row of [n, d_model].")
    if background.shape != (starts.shape[1],):
        raise ValueError(f"background has shape {tuple(background.shape)}, expected ({starts.shape[1]},).")
    X = starts.double()
    return {c: (X[torch.as_tensor(idx)].mean(0) - background.double()).float() for c, idx in _group(labels).items()}


def probe_directions(starts: Tensor, labels: Sequence[Any], norms: Mapping[Any, float], *, C: float = 1.0, random_state: int = 0) -> dict[Any, Tensor]:
    """Per category c: a one-vs-rest logistic-regression direction, rescaled to ``norms[c]``.

    Features are standardised (mean / std of ``starts``); the weight vector ``w`` is mapped
    back to activation space as the filter ``w_raw = w / std`` (``w_raw @ x`` is the logit) and
    then to its activation pattern ``cov(starts) @ w_raw`` (Haufe et al. 2014), which is
    unit-normalised and scaled to ``norms[c]`` (the diffmeans norm). Classes are balanced.
    """
    from sklearn.linear_model import LogisticRegression

    groups = _group(labels)
    if len(groups) < 2:
        raise ValueError(f"A probe needs at least 2 categories with examples; got {list(groups)}. Use --method diffmeans or a taxonomy with more categories.")
    keep = np.array([l is not None for l in labels])
    X = starts.double().numpy()[keep]
    y = np.array([l for l in labels if l is not None], dtype=object)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    Xs = (X - mu) / sd
    cov = np.cov(X, rowvar=False)
    out: dict[Any, Tensor] = {}
    for c in groups:
        target = np.array([v == c for v in y], dtype=int)
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=random_state).fit(Xs, target)
        w = torch.as_tensor(cov @ (clf.coef_[0] / sd), dtype=torch.float64)  # the activation pattern cov(X) w_raw (Haufe et al. 2014), not the filter w_raw
        out[c] = (w / w.norm().clamp_min(1e-12) * float(norms[c])).float()
    return out


# ---------------------------------------------------------------- optimised vectors


@dataclass(frozen=True)
class TargetExample:
    """One training example for :func:`optimize_vector`.

    ``v`` is added at positions ``[add_start, add_end)``; the loss is the cross-entropy of tokens
    ``[target_start, target_end)`` (predicted from positions ``target_start - 1 ...``).
    """

    input_ids: tuple[int, ...]
    add_start: int
    add_end: int
    target_start: int
    target_end: int
    group: str = ""  # rollouts in one group stay on one side of the held-out split

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if not (1 <= self.target_start < self.target_end <= n and 0 <= self.add_start <= self.add_end <= n):
            raise ValueError(f"TargetExample spans add [{self.add_start}, {self.add_end}) / target [{self.target_start}, {self.target_end}) do not fit {n} tokens.")

    @classmethod
    def sentence(cls, input_ids: Sequence[int], start: int, end: int, group: str = "", positions: str = "decision") -> TargetExample:
        """Predict the sentence at token positions ``[start, end)``, adding ``v`` at the decision position
        ``start - 1`` only (``positions="decision"``) or at ``[start - 1, end - 1)`` (``"sentence"``)."""
        if positions not in POSITIONS:
            raise ValueError(f"positions={positions!r}: expected one of {POSITIONS}.")
        return cls(tuple(int(i) for i in input_ids[:end]), start - 1, start if positions == "decision" else end - 1, start, end, group)


@dataclass
class OptimizeResult:
    direction: Tensor  # [d_model]
    heldout_loss: float  # best held-out CE (nats / token)
    heldout_loss_zero: float  # held-out CE without the vector
    train_loss: float
    epochs: int
    best_epoch: int
    n_train: int
    n_heldout: int
    max_norm: float
    history: list[dict[str, float]] = field(default_factory=list)
    batch_size: int = DEFAULT_BATCH_SIZE  # examples per optimiser step
    max_tokens: int | None = DEFAULT_MAX_TOKENS  # padded tokens per forward pass


class _frozen:
    """Context: parameters of ``model`` do not require grad (restored on exit)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p, f in self.flags:
            p.requires_grad_(f)


def _length(e: TargetExample) -> int:
    """Tokens of ``e`` a forward pass needs: up to its last target (later tokens cannot change the loss of a causal LM)."""
    return e.target_end


def microbatches(examples: Sequence[TargetExample], max_tokens: int | None) -> list[list[int]]:
    """Indices of ``examples`` packed into forward passes of at most ``max_tokens`` padded tokens.

    Examples are sorted by length (so little padding is run) and packed greedily: a pass of
    ``b`` examples whose longest has ``T`` tokens costs ``b * T``. An example longer than the
    budget runs alone. ``max_tokens=None``: one pass.
    """
    order = sorted(range(len(examples)), key=lambda i: (_length(examples[i]), i))
    if max_tokens is None:
        return [order] if order else []
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * _length(examples[i]) <= max_tokens:  # sorted: i is the longest so far
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _batch(examples: Sequence[TargetExample], pad_id: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ids, add mask ``[b, T]`` and target mask ``[b, T]`` (target positions), each example cut at its last target."""
    T = max(_length(e) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    add = torch.zeros((len(examples), T))
    tgt = torch.zeros((len(examples), T), dtype=torch.bool)
    for j, e in enumerate(examples):
        ids[j, : _length(e)] = torch.tensor(e.input_ids[: _length(e)])
        add[j, e.add_start : e.add_end] = 1.0
        tgt[j, e.target_start : e.target_end] = True
    return ids.to(device), add.to(device), tgt.to(device)


def _head_rows(model: torch.nn.Module) -> int:
    """Target rows per LM-head call: about ``LOGIT_CHUNK_ELEMENTS`` logits (64 MB in float32) at a time."""
    return max(1, LOGIT_CHUNK_ELEMENTS // int(model.get_output_embeddings().weight.shape[0]))


def vector_loss(
    model: torch.nn.Module,
    site: str | HookSite,
    v: Tensor,
    examples: Sequence[TargetExample],
    *,
    pad_token_id: int = 0,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    grad_scale: float | None = None,
) -> tuple[float, int]:
    """Summed cross-entropy of the examples' target tokens with ``v`` ``[d_model]`` added at ``site``, and their count.

    Logits are computed only where the loss reads them: the model body runs to its final hidden
    states (:func:`latentreason.sites.lm_head_of`), the rows predicting target tokens are
    gathered, and the LM head is applied to those rows only, about ``LOGIT_CHUNK_ELEMENTS`` logits
    at a time; no ``[batch, seq, vocab]`` tensor is built. Examples are cut at their last target
    and packed into forward passes of at most ``max_tokens`` padded tokens (:func:`microbatches`),
    which bounds peak memory without changing the loss beyond float rounding.

    With ``grad_scale``, ``grad_scale * loss`` is also back-propagated into ``v`` (accumulating in
    the ``.grad`` of the leaves ``v`` depends on); each pass frees its graph before the next.
    """
    site = HookSite.parse(site)
    body, head = lm_head_of(model)
    device = v.device
    rows = _head_rows(model)
    train = grad_scale is not None and v.requires_grad
    leaf = v.detach().requires_grad_(True) if train else v  # passes accumulate here; v's own graph is walked once, at the end
    total, count = 0.0, 0
    for mb in microbatches(examples, max_tokens):
        ids, add, tgt = _batch([examples[i] for i in mb], pad_token_id, device)
        # right padding under a causal mask: no real token attends to a pad, so no attention mask is needed
        with intervene(model, [(site, lambda x: x + add[..., None].to(x.dtype) * leaf.to(x.dtype))]):
            h = body(input_ids=ids, use_cache=False).last_hidden_state  # [b, T, d_model], after the final norm
        mask = tgt[:, 1:]  # position p predicts token p + 1
        hs, labels = h[:, :-1][mask], ids[:, 1:][mask]  # [m, d_model], [m]: the only rows that reach the LM head
        count += int(labels.numel())
        if not train:
            for a in range(0, len(labels), rows):
                total += float(torch.nn.functional.cross_entropy(head(hs[a : a + rows]).float(), labels[a : a + rows], reduction="sum"))
            continue
        grad = torch.empty_like(hs)
        for a in range(0, len(labels), rows):  # one chunk of logits alive at a time, forward and backward
            hc = hs[a : a + rows].detach().requires_grad_(True)
            with torch.enable_grad():
                ce = torch.nn.functional.cross_entropy(head(hc).float(), labels[a : a + rows], reduction="sum")
                (grad[a : a + rows],) = torch.autograd.grad(ce * grad_scale, hc)
            total += float(ce.detach())
        hs.backward(grad)
    if train and leaf.grad is not None:
        v.backward(leaf.grad)
    return total, count


def _mean_loss(model, site, v, examples, pad_id, max_tokens) -> float:
    with torch.no_grad():
        total, n = vector_loss(model, site, v, examples, pad_token_id=pad_id, max_tokens=max_tokens)
    return total / max(n, 1)


def check_batching(batch_size: int, max_tokens: int | None) -> None:
    """Refuse a non-positive optimiser batch or token budget, before any compute."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: an optimiser step needs at least 1 example; give a positive integer (default {DEFAULT_BATCH_SIZE}).")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens={max_tokens!r}: the token budget per forward pass must be a positive integer (default {DEFAULT_MAX_TOKENS}), or None for one pass per step.")


def heldout_split(examples: Sequence[TargetExample], fraction: float, seed: int) -> tuple[list[TargetExample], list[TargetExample]]:
    """Split by ``group`` (rollout): a seeded ``fraction`` of groups is held out (at least one example each side)."""
    groups = sorted({e.group for e in examples})
    g = torch.Generator().manual_seed(seed)
    if len(groups) >= 2:
        order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
        held = set(order[: max(1, int(round(fraction * len(groups))))])
        if len(held) == len(groups):
            held = set(order[:-1])
        return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]
    if len(examples) < 2:
        raise ValueError(f"Cannot hold out examples from {len(examples)}: an optimised vector needs at least 2 examples.")
    perm = torch.randperm(len(examples), generator=g).tolist()
    n_held = max(1, int(round(fraction * len(examples))))
    return [examples[i] for i in perm[n_held:]], [examples[i] for i in perm[:n_held]]


def optimize_vector(
    model: torch.nn.Module,
    site: str | HookSite,
    examples: Sequence[TargetExample],
    *,
    scale: float,
    max_norm: float | None = None,
    lr: float = 0.05,
    max_epochs: int = 30,
    patience: int = 3,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    heldout_fraction: float = 0.2,
    pad_token_id: int = 0,
    seed: int = 0,
) -> OptimizeResult:
    """Train ``v`` to minimise the CE of the examples' targets with ``v`` added at the site.

    ``v = scale / sqrt(d_model) * u`` with Adam on ``u`` (so ``lr`` is in units of the typical
    per-coordinate activation size, whatever the model); after each step ``||v||`` is projected
    onto ``max_norm`` (default ``scale``). The held-out CE (a seeded split by rollout) is measured
    before training and after each epoch; the vector with the lowest held-out CE is returned and
    training stops after ``patience`` epochs without improvement. Deterministic given ``seed``.

    Memory: each optimiser step averages the CE over ``batch_size`` examples, run as forward passes
    of at most ``max_tokens`` padded tokens each (gradients accumulated), and logits exist only at
    target positions (:func:`vector_loss`). ``max_tokens`` bounds peak memory (an example longer
    than it runs alone) and changes the result only by float rounding; ``batch_size`` is the
    optimisation's batch and does change it.
    """
    site = HookSite.parse(site)
    resolve(model, site)
    if not examples:
        raise ValueError("optimize_vector got no examples.")
    check_batching(batch_size, max_tokens)
    d = hidden_size_of(model)
    device = next(model.parameters()).device
    max_norm = float(scale if max_norm is None else max_norm)
    train, held = heldout_split(examples, heldout_fraction, seed)
    g = torch.Generator().manual_seed(seed)
    unit = scale / d**0.5
    u = torch.zeros(d, device=device, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)

    def vec() -> Tensor:
        return u * unit

    was_training = model.training
    model.eval()
    with _frozen(model):
        zero = _mean_loss(model, site, torch.zeros(d, device=device), held, pad_token_id, max_tokens)
        best, best_u, best_epoch, bad, epochs, train_loss = zero, u.detach().clone(), 0, 0, 0, float("nan")
        history = [{"epoch": 0, "heldout": zero}]
        for epoch in range(1, max_epochs + 1):
            epochs = epoch
            order = torch.randperm(len(train), generator=g).tolist()
            tot, ntok = 0.0, 0
            for i in range(0, len(order), batch_size):
                chunk = [train[j] for j in order[i : i + batch_size]]
                m = sum(e.target_end - e.target_start for e in chunk)
                opt.zero_grad()
                ce, _ = vector_loss(model, site, vec(), chunk, pad_token_id=pad_token_id, max_tokens=max_tokens, grad_scale=1.0 / max(m, 1))
                opt.step()
                with torch.no_grad():
                    n = float(vec().norm())
                    if n > max_norm:
                        u.mul_(max_norm / n)
                tot, ntok = tot + ce, ntok + m
            train_loss = tot / max(ntok, 1)
            h = _mean_loss(model, site, vec().detach(), held, pad_token_id, max_tokens)
            history.append({"epoch": epoch, "train": train_loss, "heldout": h, "norm": float(vec().detach().norm())})
            if h < best - 1e-6:
                best, best_u, best_epoch, bad = h, u.detach().clone(), epoch, 0
            else:
                bad += 1
                if bad >= patience:
                    break
    model.train(was_training)
    if best_epoch == 0:
        log.info("optimize_vector: no epoch beat the held-out loss without a vector (%.4f); returning a zero vector. Use more examples, epochs or a larger lr.", zero)
    return OptimizeResult((best_u * unit).detach().cpu().float(), best, zero, train_loss, epochs, best_epoch, len(train), len(held), max_norm, history, batch_size, max_tokens)


# --------------------------------------------------------------------- cache glue


@dataclass(frozen=True)
class Categories:
    """Category of each cache sentence (None = unlabelled) and the metadata vectors carry."""

    labels: list[Any]  # per sentence of cache.sentences
    names: dict[Any, str]  # category -> vector name
    info: dict[Any, dict[str, Any]]  # category -> provenance (label, planted majority, ...)
    source: str  # "planted", a taxonomy directory, or "estimator"
    meta: dict[str, Any] = field(default_factory=dict)


def _safe_name(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def taxonomy_roles(taxonomy: Any) -> tuple[str, ...]:
    """The generator roles a taxonomy (directory or estimator) was fit on; post-RL for planted labels and older taxonomies."""
    from latentreason.cache import parse_roles
    from latentreason.taxonomy import _Taxonomy, load_taxonomy

    if taxonomy is None or taxonomy == "planted":
        return parse_roles(None)
    est = taxonomy if isinstance(taxonomy, _Taxonomy) else load_taxonomy(taxonomy)
    return parse_roles(getattr(est, "extra_", {}).get("roles"))


def categories_from(cache: Any, taxonomy: Any, site: str, roles: str | Sequence[str] | None = None) -> Categories:
    """Per-sentence categories from planted labels, a taxonomy directory or a fitted taxonomy estimator.

    A taxonomy must have been fit at ``site`` on the cache's post-RL model; its own stored
    normalisation is applied (``estimator.predict`` on raw pooled activations). Only sentences
    of rollouts generated by ``roles`` get a category (default: the roles the taxonomy was fit
    on, post-RL for planted labels); the others are None, so ``labels`` stays aligned with
    ``cache.sentences``.
    """
    from latentreason.cache import parse_roles
    from latentreason.taxonomy import _Taxonomy, load_taxonomy

    planted_only = taxonomy is None or taxonomy == "planted"
    if planted_only:
        est, source = None, "planted"
    elif isinstance(taxonomy, _Taxonomy):
        est, source = taxonomy, "estimator"
    else:
        est, source = load_taxonomy(taxonomy), str(taxonomy)
    roles = parse_roles(roles if roles is not None or est is None else getattr(est, "extra_", {}).get("roles"))
    view = cache.generated_by(roles)
    sents = cache.sentences
    mine = [s.get("rollout_model") in roles for s in sents]
    planted = [s.get("label") if m else None for s, m in zip(sents, mine)]
    if est is None:
        if not any(p is not None for p in planted):
            raise ValueError(f"The cache's sentences from {', '.join(roles)} rollouts carry no planted labels; pass a taxonomy directory (latentreason taxonomy --out DIR) instead of 'planted'.")
        cats = sorted({p for p in planted if p is not None})
        return Categories(planted, {c: _safe_name(str(c)) for c in cats}, {c: {"category": c, "label": c, "planted_majority": c} for c in cats}, source, {"roles": list(roles)})
    est.check_is_fitted()
    t_site = getattr(est, "site_", None)
    if t_site is None:
        raise ValueError("The taxonomy records no site; fit it with latentreason.taxonomy.fit_from_cache or set estimator.site_.")
    if str(HookSite.parse(t_site)) != site:
        raise ValueError(f"The taxonomy was fit at site {t_site!r}, but vectors are requested at {site!r}. Use --site {t_site}, or build a taxonomy at {site} (latentreason taxonomy --site {site}).")
    fp = getattr(est, "fingerprint_", None)
    if fp is not None and "post_rl" in cache.models and fp != cache.fingerprint("post_rl"):
        raise ValueError(f"The taxonomy was fit on post-RL model {fp}, but this cache's post-RL model is {cache.fingerprint('post_rl')}. Rebuild the taxonomy from this cache.")
    X = view.sentence_pooled(site, "post_rl", getattr(est, "extra_", {}).get("pooling", "mean"))  # [n_sentences of roles, d]
    predicted = iter(int(c) for c in est.predict(X))
    labels: list[Any] = [next(predicted) if m else None for m in mine]
    text_labels = getattr(est, "extra_", {}).get("cluster_labels") or []
    info: dict[Any, dict[str, Any]] = {}
    for c in range(int(est.k)):
        mix = Counter(p for p, l in zip(planted, labels) if l == c and p is not None)
        info[c] = {"category": c, "label": text_labels[c] if c < len(text_labels) else f"cluster {c}", "planted_majority": mix.most_common(1)[0][0] if mix else None}
    return Categories(labels, {c: f"cluster{c}" for c in range(int(est.k))}, info, source, {"taxonomy_method": est.method, "k": int(est.k), "roles": list(roles)})


def background_mean(cache: Any, site: str, model: str = "base") -> tuple[Tensor, int, float]:
    """Mean activation over every completion token in the cache ``[d_model]``, the token count, and the mean token norm."""
    total, n, norms = None, 0, 0.0
    for _, x in cache.iter_rollouts(site, model):
        x = x.double()
        s = x.sum(0)
        total = s if total is None else total + s
        n += int(x.shape[0])
        norms += float(x.norm(dim=1).sum())
    if total is None or n == 0:
        raise ValueError("The activation cache holds no completion tokens; cache some rollouts first.")
    return (total / n).float(), n, norms / n


def rollout_token_ids(cache: Any, tokenizer, format_prompt=None, model: str = "base") -> dict[str, list[int]]:
    """Prompt + completion token ids of each cached rollout, tokenized as the cache did (checked against its spans)."""
    fmt = format_prompt or (lambda p: p)
    out: dict[str, list[int]] = {}
    for r in cache.rollouts:
        p_ids = tokenizer(fmt(r["prompt"]), add_special_tokens=True)["input_ids"]
        c_ids = tokenizer(r["completion"], add_special_tokens=False)["input_ids"]
        t = r["tokens"][model]
        if len(p_ids) != t["prompt_tokens"] or len(c_ids) != t["length"]:
            raise ValueError(
                f"Rollout {r['id']} tokenizes to {len(p_ids)}+{len(c_ids)} tokens, but the cache recorded {t['prompt_tokens']}+{t['length']} for {model}: "
                "the tokenizer or prompt template differs from the one the cache was made with. Pass the pair the cache was made from."
            )
        out[r["id"]] = list(p_ids) + list(c_ids)
    return out


def sentence_examples(cache: Any, ids: Mapping[str, list[int]], labels: Sequence[Any], model: str = "base", positions: str = "decision") -> dict[Any, list[TargetExample]]:
    """Per category, one :class:`TargetExample` per cache sentence (absolute token positions)."""
    prompt_len = {r["id"]: r["tokens"][model]["prompt_tokens"] for r in cache.rollouts}
    out: dict[Any, list[TargetExample]] = {}
    for s, c in zip(cache.sentences, labels):
        if c is None:
            continue
        a, b = s["tokens"][model]
        p = prompt_len[s["rollout_id"]]
        out.setdefault(c, []).append(TargetExample.sentence(ids[s["rollout_id"]], p + a, p + b, group=s["rollout_id"], positions=positions))
    return out


def bias_examples(cache: Any, ids: Mapping[str, list[int]], model: str = "base") -> list[TargetExample]:
    """One example per rollout: the whole completion is the target."""
    out = []
    for r in cache.rollouts:
        t = r["tokens"][model]
        p, n = t["prompt_tokens"], t["length"]
        if n > 0:
            out.append(TargetExample(tuple(ids[r["id"]]), p - 1, p + n - 1, p, p + n, r["id"]))
    return out


def _subsample(examples: list[TargetExample], n: int | None, seed: int) -> list[TargetExample]:
    if n is None or len(examples) <= n:
        return examples
    idx = sorted(torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:n].tolist())
    return [examples[i] for i in idx]


def default_site(cache: Any, taxonomy: Any = None, defaults: Mapping[str, Any] | None = None) -> str:
    """Where vectors go when no site is named: the taxonomy's site (a taxonomy directory or estimator),
    else the pair's default site (``defaults["site"]``) if the cache holds it, else the cache's first site."""
    if taxonomy not in (None, "planted"):
        from latentreason.taxonomy import _Taxonomy, load_taxonomy

        t_site = getattr(taxonomy if isinstance(taxonomy, _Taxonomy) else load_taxonomy(taxonomy), "site_", None)
        if t_site is not None:
            return str(t_site)
    names = [str(HookSite.parse(s)) for s in cache.sites]
    pair_site = (defaults or {}).get("site")
    if pair_site is not None and not is_depth_site(pair_site) and str(HookSite.parse(pair_site)) in names:
        return str(HookSite.parse(pair_site))
    return names[0]


def _open_cache(cache: Any) -> tuple[Any, Path | None]:
    if isinstance(cache, (str, os.PathLike)):
        from latentreason.cache import ActivationCache

        return ActivationCache.open(cache), Path(cache)
    return cache, Path(cache.directory) if getattr(cache, "directory", None) is not None else None


def extract_vectors(
    pair_or_base_model: Any,
    cache: Any,
    taxonomy: Any = None,
    site: str | HookSite | None = None,
    method: str = "diffmeans",
    bias: bool = False,
    *,
    tokenizer: Any = None,
    min_examples: int = 2,
    seed: int = 0,
    max_examples: int | None = 2048,
    optimize: Mapping[str, Any] | None = None,
    positions: str = "decision",
    probe_C: float = 1.0,
    roles: str | Sequence[str] | None = None,
) -> list[SteeringVector]:
    """One :class:`SteeringVector` per category for the BASE model at ``site`` (plus ``bias`` if asked).

    Args:
        pair_or_base_model: a :class:`~latentreason.pair.ModelPair` or the base model itself
            (then pass ``tokenizer`` for ``optimized`` / ``bias``; prompts are used unformatted).
        cache: an :class:`~latentreason.cache.ActivationCache` or its directory (must hold the base model).
        taxonomy: ``"planted"`` / ``None`` (planted labels), a taxonomy directory, or a fitted taxonomy.
        site: hook site (``resid_post.3``, or a depth fraction of the base model, ``resid_post@0.4``);
            default: :func:`default_site`.
        method: ``diffmeans``, ``probe`` or ``optimized``.
        bias: also train the general ``bias`` vector (optimised over whole completions).
        min_examples: categories with fewer decision positions get no vector (logged); so does an
            optimised category whose training never beats the zero vector on held-out rollouts.
        max_examples: optimised vectors use at most this many examples per category (seeded subsample).
        optimize: extra keyword arguments for :func:`optimize_vector` (``lr``, ``max_epochs``, ...).
        positions: where an optimised category vector is added in training: ``"decision"`` (the
            token before the sentence) or ``"sentence"`` (that token and the sentence's tokens).
            The bias vector is always added at every position predicting the completion.
        roles: the generators whose rollouts the vectors learn from (categories, background,
            bias); default: the roles the taxonomy was fit on, post-RL for planted labels.

    Example:
        >>> vecs = extract_vectors(pair, "runs/demo/activations", "planted", "resid_post.1")  # doctest: +SKIP
    """
    if method not in EXTRACT_METHODS:
        raise ValueError(f"Unknown extraction method {method!r}: expected one of {', '.join(EXTRACT_METHODS)}.")
    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r}: expected one of {POSITIONS}.")
    opt_kw = dict(optimize or {})
    check_batching(opt_kw.get("batch_size", DEFAULT_BATCH_SIZE), opt_kw.get("max_tokens", DEFAULT_MAX_TOKENS))
    cache, cache_dir = _open_cache(cache)
    from latentreason.pair import ModelPair

    if isinstance(pair_or_base_model, ModelPair):
        model, tok, fmt = pair_or_base_model.base_model, pair_or_base_model.base_tokenizer, (lambda p: pair_or_base_model.format_prompt("base", p))
    else:
        model, tok, fmt = pair_or_base_model, tokenizer, None
    if "base" not in cache.models:
        raise ValueError(f"The activation cache holds models {cache.models}, not 'base'; re-run `latentreason cache --models base,post_rl`.")
    fp = model_fingerprint(model)
    cache.check_model("base", fp)
    from latentreason.taxonomy import cache_hash, cache_site_check

    if site is None:
        site = default_site(cache, taxonomy, pair_or_base_model.defaults if isinstance(pair_or_base_model, ModelPair) else None)
        log.info("vectors at %s (the default site)", site)
    site = cache_site_check(cache, str(site_in(model, site)))  # a depth fraction (resid_post@0.4) is a layer of the base model
    if cache.d_model("base") != hidden_size_of(model):
        raise ValueError(f"The cache's base activations have d_model {cache.d_model('base')}, the model {hidden_size_of(model)}: another model.")
    from latentreason.cache import parse_roles

    roles = taxonomy_roles(taxonomy) if roles is None else parse_roles(roles)
    cache = cache.generated_by(roles)  # categories, background, bias: all from the post-RL model's own traces
    cats = categories_from(cache, taxonomy, site, roles)
    counts = Counter(c for c in cats.labels if c is not None)
    keep = [c for c in sorted(counts, key=str) if counts[c] >= min_examples]
    for c in sorted(set(counts) - set(keep), key=str):
        log.warning("Category %r has %d examples (< min_examples=%d): no vector.", cats.names[c], counts[c], min_examples)
    if not keep and not bias:
        raise ValueError(f"No category has at least {min_examples} examples in the cache; cache more rollouts or lower min_examples.")
    base_prov = {
        "cache": str(cache_dir) if cache_dir else None,
        "cache_manifest_sha256": cache_hash(cache_dir) if cache_dir else None,
        "taxonomy": cats.source,
        **cats.meta,
        "seed": seed,
    }
    labels = [c if c in keep else None for c in cats.labels]
    vectors: list[SteeringVector] = []
    need_ids = method == "optimized" or bias
    ids = None
    if need_ids:
        if tok is None:
            raise ValueError("Optimised and bias vectors need the base tokenizer: pass a ModelPair, or tokenizer=.")
        ids = rollout_token_ids(cache, tok, fmt)
    bg, n_bg, scale = background_mean(cache, site, "base")  # scale: typical token norm, sets the optimiser's units and norm cap
    if keep:
        starts = cache.sentence_start_tokens(site, "base")  # [n_sentences, d]
        dm = diffmeans_directions(starts, labels, bg)
        if method == "diffmeans":
            dirs = dm
        elif method == "probe":
            dirs = probe_directions(starts, labels, {c: float(v.norm()) for c, v in dm.items()}, C=probe_C, random_state=seed)
        else:
            dirs, extra = {}, {}
            per_cat = sentence_examples(cache, ids, labels, positions=positions)
            for c in keep:
                ex = _subsample(per_cat[c], max_examples, seed)
                res = optimize_vector(model, site, ex, scale=scale, pad_token_id=_pad_id(tok), seed=seed, **opt_kw)
                log.info("optimised %s: held-out CE %.4f -> %.4f, norm %.2f", cats.names[c], res.heldout_loss_zero, res.heldout_loss, float(res.direction.norm()))
                if res.best_epoch == 0:
                    log.warning("No vector for %r: training never beat the held-out loss without a vector (%.4f).", cats.names[c], res.heldout_loss_zero)
                    continue
                dirs[c] = res.direction
                extra[c] = {**_opt_prov(res), "positions": positions}
            keep = [c for c in keep if c in dirs]
        for c in keep:
            prov = {**base_prov, **cats.info[c], "n_examples": counts[c], "n_background_tokens": n_bg}
            if method == "optimized":
                prov.update(extra[c])
            vectors.append(SteeringVector(cats.names[c], dirs[c].float().cpu(), HookSite.parse(site), method, fp, _jsonable(prov)))
    if bias:
        ex = _subsample(bias_examples(cache, ids), max_examples, seed)
        res = optimize_vector(model, site, ex, scale=scale, pad_token_id=_pad_id(tok), seed=seed, **opt_kw)
        if res.best_epoch == 0:
            log.warning("The bias vector is zero: training never beat the held-out loss without a vector (%.4f).", res.heldout_loss_zero)
        prov = {**base_prov, "category": None, "label": "bias (whole post-RL completions)", "n_examples": len(bias_examples(cache, ids)), **_opt_prov(res), "positions": "completion"}
        vectors.append(SteeringVector("bias", res.direction, HookSite.parse(site), "bias", fp, _jsonable(prov)))
    return vectors


def _pad_id(tok) -> int:
    return int(tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0)


def _opt_prov(res: OptimizeResult) -> dict[str, Any]:
    return {
        "heldout_loss": res.heldout_loss,
        "heldout_loss_zero": res.heldout_loss_zero,
        "train_loss": res.train_loss,
        "epochs": res.epochs,
        "best_epoch": res.best_epoch,
        "n_train": res.n_train,
        "n_heldout": res.n_heldout,
        "max_norm": res.max_norm,
        "batch_size": res.batch_size,
        "max_tokens": res.max_tokens,
    }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


VECTOR_OWNS = ("index.json", "specificity.json", "*.safetensors", "*.json")


def vectors_inputs(cache: Any, taxonomy: Any, base_fingerprint: str) -> dict[str, Any]:
    """What a vectors stage reads: the cache, the taxonomy (planted labels: none) and the base model."""
    from latentreason.stage import artifact_digest

    tax = None if taxonomy in (None, "planted") else artifact_digest(taxonomy)
    return {"activations": cache.manifest.digest(), "taxonomy": tax, "fingerprints": {"base": base_fingerprint}}


def _write_vectors_files(st: Any, vectors: Sequence[SteeringVector], *, base_path: str, cache_dir: str | os.PathLike | None, extra: Mapping[str, Any] | None, json_files: Mapping[str, Any] | None = None) -> Path:
    from latentreason.io import write_json
    from latentreason.taxonomy import cache_hash
    from latentreason.vectors import save_vectors

    d = save_vectors(list(vectors), st.directory)
    names = ["index.json", *(f"{v.name}{ext}" for v in vectors for ext in (".json", ".safetensors"))]
    for name, obj in (json_files or {}).items():
        write_json(d / name, obj)
        names.append(name)
    fps = {v.fingerprint for v in vectors}
    st.complete(
        names,  # only what this stage wrote: files of an earlier artifact are never hashed into this one
        models={"base": {"path": base_path, "fingerprint": next(iter(fps)) if len(fps) == 1 else ""}},
        extra={"cache": str(cache_dir) if cache_dir else None, "cache_manifest_sha256": cache_hash(cache_dir) if cache_dir else None, **(extra or {})},
    )
    return d


def write_vectors(out: str | os.PathLike, vectors: Sequence[SteeringVector], *, config: Mapping[str, Any], base_path: str = "", cache_dir: str | os.PathLike | None = None, extra: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """``save_vectors`` plus a ``manifest.json`` (kind ``"vectors"``) hashing every file it wrote.

    Vectors with another ``config`` or ``inputs`` already in ``out`` are refused unless ``force``
    (then only their files are removed). To extract only when needed, use :func:`build_vectors`.
    """
    from latentreason.stage import REUSE, open_stage

    with open_stage(out, VECTORS_KIND, config, inputs, owns=VECTOR_OWNS, force=force) as st:
        if st.state == REUSE:
            st.restart()
        return _write_vectors_files(st, vectors, base_path=base_path, cache_dir=cache_dir, extra=extra)


def build_vectors(
    pair: Any,
    cache_dir: str | os.PathLike,
    taxonomy: Any,
    out: str | os.PathLike,
    site: str | None = None,
    method: str = "diffmeans",
    bias: bool = False,
    *,
    seed: int = 0,
    min_examples: int = 2,
    max_examples: int | None = 2048,
    optimize: Mapping[str, Any] | None = None,
    positions: str = "decision",
    also: Callable[[list[SteeringVector]], Mapping[str, Any]] | None = None,
    also_config: Mapping[str, Any] | None = None,
    force: bool = False,
) -> tuple[Path, list[SteeringVector], bool]:
    """The vectors stage: extract into ``out`` unless vectors with these settings, from this cache and taxonomy, are there.

    ``taxonomy`` is ``"planted"`` or a taxonomy directory. ``also(vectors)`` returns extra JSON
    files to write with them (e.g. ``{"specificity.json": ...}``), determined by ``also_config``.
    Returns ``(out, vectors, reused)``; other settings or inputs are refused with the differing
    keys named (``force=True`` replaces them).
    """
    from latentreason.cache import ActivationCache
    from latentreason.stage import REUSE, open_stage
    from latentreason.taxonomy import cache_site_check
    from latentreason.vectors import load_vectors

    cache = ActivationCache.open(cache_dir)
    site = cache_site_check(cache, str(site_in(pair.base_model, site)) if site is not None else default_site(cache, taxonomy, pair.defaults))
    config = {
        "site": site, "method": method, "bias": bias, "taxonomy": "planted" if taxonomy in (None, "planted") else "directory", "seed": seed,
        "min_examples": min_examples, "max_examples": max_examples, "optimize": dict(optimize or {}), "positions": positions, **dict(also_config or {}),
    }
    with open_stage(out, VECTORS_KIND, config, vectors_inputs(cache, taxonomy, pair.fingerprint("base")), owns=VECTOR_OWNS, force=force) as st:
        if st.state == REUSE:
            vectors = load_vectors(st.directory)
            return st.directory, list(vectors.values()), True
        vecs = extract_vectors(pair, cache, taxonomy, site, method, bias, seed=seed, min_examples=min_examples, max_examples=max_examples, optimize=optimize, positions=positions)
        files = dict(also(vecs)) if also is not None else {}
        _write_vectors_files(st, vecs, base_path=pair.base_spec.path, cache_dir=cache_dir, extra=None, json_files=files)
        return st.directory, vecs, False


# ---------------------------------------------------------------------- specificity


@dataclass
class Specificity:
    """Result of :func:`specificity_matrix`.

    ``gain[i, k]``: mean change in P(marker k) at the decision positions when vector i is added
    (rows ``vectors``, columns ``markers``). ``by_context[i, j, k]``: the same restricted to positions
    where the post-RL model starts a sentence of strategy ``contexts[j]``.
    """

    vectors: list[str]
    markers: list[str]  # marker strings, one per column
    strategies: list[str]  # strategy of each marker column
    contexts: list[str]
    own: list[int | None]  # column of each vector's own marker (None: bias / unknown)
    gain: np.ndarray  # [n_vectors, n_markers]
    by_context: np.ndarray  # [n_vectors, n_contexts, n_markers]
    base_prob: np.ndarray  # [n_contexts, n_markers] unsteered P(marker)
    n_positions: list[int]  # per context
    alpha: float

    def diagonal_dominant(self) -> bool:
        """Every vector with an own marker raises it (gain > 0) more than any other marker, and more than any other vector raises it."""
        ok = True
        for i, k in enumerate(self.own):
            if k is None:
                continue
            row = self.gain[i]
            ok &= bool(row[k] > 0 and all(row[k] > row[m] for m in range(len(row)) if m != k))
            ok &= bool(all(row[k] > self.gain[j, k] for j in range(len(self.vectors)) if j != i and self.own[j] is not None))
        return ok

    def table(self) -> str:
        """The gain matrix as text (rows vectors, columns markers)."""
        head = f"{'vector':>14} " + " ".join(f"{m!r:>8}" for m in self.markers)
        lines = [f"specificity: gain in P(marker) at decision positions, alpha={self.alpha:g}", head]
        for i, v in enumerate(self.vectors):
            lines.append(f"{v:>14} " + " ".join(("*" if self.own[i] == k else " ") + f"{self.gain[i, k]:+7.3f}" for k in range(len(self.markers))))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "vectors": self.vectors,
            "markers": self.markers,
            "strategies": self.strategies,
            "contexts": self.contexts,
            "own": self.own,
            "gain": self.gain.tolist(),
            "by_context": self.by_context.tolist(),
            "base_prob": self.base_prob.tolist(),
            "n_positions": self.n_positions,
            "diagonal_dominant": self.diagonal_dominant(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Specificity:
        """The inverse of :meth:`to_dict` (e.g. ``specificity.json`` of a reused vectors artifact)."""
        return cls(list(d["vectors"]), list(d["markers"]), list(d["strategies"]), list(d["contexts"]), list(d["own"]), np.asarray(d["gain"]), np.asarray(d["by_context"]), np.asarray(d["base_prob"]), list(d["n_positions"]), float(d["alpha"]))


def decision_contexts(cache: Any, tokenizer, format_prompt=None, model: str = "base") -> list[tuple[tuple[int, ...], str]]:
    """``(token ids up to and including the decision position, planted strategy)`` for each labelled cache sentence."""
    ids = rollout_token_ids(cache, tokenizer, format_prompt, model)
    plen = {r["id"]: r["tokens"][model]["prompt_tokens"] for r in cache.rollouts}
    out = []
    for s in cache.sentences:
        if s.get("label") is None:
            continue
        start = plen[s["rollout_id"]] + s["tokens"][model][0]
        out.append((tuple(ids[s["rollout_id"]][:start]), s["label"]))
    return out


@torch.no_grad()
def specificity_matrix(
    base_model: torch.nn.Module,
    tokenizer,
    vectors: Sequence[SteeringVector] | Mapping[str, SteeringVector],
    cache_or_examples: Any,
    alpha: float = 1.0,
    *,
    markers: Mapping[str, str] | None = None,
    format_prompt=None,
    max_per_context: int | None = 200,
    batch_size: int = 64,
    seed: int = 0,
) -> Specificity:
    """Gain in each strategy marker's next-token probability when each vector is added at the decision position.

    Args:
        vectors: the vectors (their fingerprint and hidden size are checked against ``base_model``).
        cache_or_examples: an ActivationCache (or directory) with planted labels, or a list of
            ``(context token ids, strategy)`` whose last token is the decision position.
        alpha: steering strength (``alpha * direction`` is added).
        markers: strategy -> marker text (default: the organism's ``S``, ``C``, ``R``, ``A``); the
            marker's first token is scored.
        max_per_context: at most this many positions per strategy (seeded subsample).

    A vector's own strategy is its name if that is a strategy, else its provenance's ``planted_majority``.
    """
    from latentreason.tasks.arith import MARKER_OF

    vecs = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    if not vecs:
        raise ValueError("specificity_matrix got no vectors.")
    fp = model_fingerprint(base_model)
    for v in vecs:
        v.check_model(base_model, fp)
    if isinstance(cache_or_examples, (list, tuple)):
        contexts = list(cache_or_examples)
    else:
        cache, _ = _open_cache(cache_or_examples)
        contexts = decision_contexts(cache, tokenizer, format_prompt)
    if not contexts:
        raise ValueError("No labelled decision positions to measure specificity on: the cache's sentences carry no planted labels.")
    marker_of = dict(markers or MARKER_OF)
    strategies = [s for s in marker_of if any(c == s for _, c in contexts) or any(_own_strategy(v, marker_of) == s for v in vecs)]
    marker_ids = []
    for s in strategies:
        t = tokenizer(marker_of[s], add_special_tokens=False)["input_ids"]
        if not t:
            raise ValueError(f"Marker {marker_of[s]!r} of strategy {s!r} tokenizes to nothing.")
        marker_ids.append(int(t[0]))
    ctx_names = [s for s in strategies if any(c == s for _, c in contexts)]
    g = torch.Generator().manual_seed(seed)
    by_ctx: dict[str, list[tuple[int, ...]]] = {}
    for s in ctx_names:
        items = [c for c, lab in contexts if lab == s]
        if max_per_context is not None and len(items) > max_per_context:
            items = [items[i] for i in sorted(torch.randperm(len(items), generator=g)[:max_per_context].tolist())]
        by_ctx[s] = items
    device = next(base_model.parameters()).device
    pad = _pad_id(tokenizer)
    mids = torch.tensor(marker_ids, device=device)
    body, head = lm_head_of(base_model)

    def probs(items: list[tuple[int, ...]], v: Tensor | None) -> Tensor:
        out = []
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            T = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), T), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), T), dtype=torch.long)
            for r, c in enumerate(chunk):
                ids[r, : len(c)], att[r, : len(c)] = torch.tensor(c), 1
            last = torch.tensor([len(c) - 1 for c in chunk])
            add = torch.zeros((len(chunk), T))
            add[torch.arange(len(chunk)), last] = 1.0  # only the decision position is steered
            ids, att, add, last = ids.to(device), att.to(device), add.to(device), last.to(device)
            edits = [] if v is None else [(vecs[0].site, lambda x: x + add[..., None].to(x.dtype) * v.to(x.dtype))]
            with intervene(base_model, edits):
                h = body(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state  # [b, T, d_model]
            p = head(h[torch.arange(len(chunk), device=device), last]).float().softmax(-1)  # logits at the decision positions only
            out.append(p[:, mids].cpu())
        return torch.cat(out).double()  # [n, n_markers]

    sites = {str(v.site) for v in vecs}
    if len(sites) != 1:
        raise ValueError(f"Vectors at several sites ({', '.join(sorted(sites))}); measure one site at a time.")
    base = {s: probs(by_ctx[s], None) for s in ctx_names}
    by_context = np.zeros((len(vecs), len(ctx_names), len(strategies)))
    for i, v in enumerate(vecs):
        d = (alpha * v.direction).to(device)
        for j, s in enumerate(ctx_names):
            by_context[i, j] = (probs(by_ctx[s], d) - base[s]).mean(0).numpy()
    weights = np.array([len(by_ctx[s]) for s in ctx_names], dtype=float)
    gain = (by_context * weights[None, :, None]).sum(1) / weights.sum()
    own = [strategies.index(o) if (o := _own_strategy(v, marker_of)) in strategies else None for v in vecs]
    return Specificity(
        [v.name for v in vecs], [marker_of[s] for s in strategies], strategies, ctx_names, own, gain, by_context,
        np.stack([base[s].mean(0).numpy() for s in ctx_names]), [len(by_ctx[s]) for s in ctx_names], float(alpha),
    )


def _own_strategy(v: SteeringVector, strategies: Mapping[str, str]) -> str | None:
    if v.method == "bias" or v.name == "bias":
        return None
    return v.name if v.name in strategies else v.provenance.get("planted_majority")
