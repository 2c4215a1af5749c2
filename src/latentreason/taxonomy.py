"""Taxonomies of reasoning strategies: cluster the post-RL model's sentence activations.

Two estimators, scikit-learn style (``fit`` / ``predict`` / ``transform`` / ``scores``):

* :class:`KMeansTaxonomy` — k-means on normalised sentence activations.
* :class:`SAETaxonomy` — a small top-k sparse autoencoder with ``n_latents = k``; a sentence's
  cluster is the argmax of the encoder output *before* the top-k (as the reference code does).

Both store the normalisation they were fit on (``"center+l2"``: subtract the training mean,
then scale each row to unit L2 norm) and apply it themselves, so callers pass raw activations
``[n_sentences, d_model]`` (DESIGN §2, normalisation contract). Both save as
``taxonomy.safetensors`` + ``taxonomy.json`` (no pickle) and load with :func:`load_taxonomy`.

Quality metrics need no LLM: silhouette, centroid orthogonality, stability across seeds, and
ARI / NMI against planted labels where a task plants them (:func:`evaluate`). :func:`sweep`
picks K (and the method) by a fixed rule that never looks at planted labels (see its docstring).
:func:`fit_from_cache` and :func:`write_taxonomy` are the thin glue to the activation cache and
the ``latentreason taxonomy`` artifact directory; they read only the sentences of rollouts the
post-RL model generated (``roles=`` / ``--roles`` names other generators explicitly).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentreason.io import read_json, read_tensor_artifact, sha256_file, write_json, write_tensor_artifact

log = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "center", "l2", "center+l2")
METHODS = ("kmeans", "sae")
MODEL_JSON = "taxonomy.json"
MODEL_TENSORS = "taxonomy.safetensors"
TAXONOMY_KIND = "taxonomy"
# sweep rule: a candidate must reproduce its own labels across seeds at least this well (mean pairwise ARI)
STABILITY_MIN = 0.8


def _as_matrix(X: Any, what: str = "X") -> Tensor:
    """``X`` as a float32 CPU tensor ``[n, d]``; raises on bad shapes or non-finite values."""
    t = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X).detach().to("cpu", torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n_sentences, d_model], got shape {tuple(t.shape)}.")
    if t.shape[0] == 0:
        raise ValueError(f"{what} is empty: there are no sentences to cluster.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} has non-finite values (NaN or inf); check the activation cache.")
    return t


class _Taxonomy:
    """Shared machinery: stored normalisation, fitted-state checks, persistence."""

    method = ""

    k: int
    normalize: str
    random_state: int

    # -------------------------------------------------------------- normalisation
    def _check_params(self, n: int) -> None:
        if not isinstance(self.k, (int, np.integer)) or self.k < 2:
            raise ValueError(f"k={self.k!r}: a taxonomy needs at least 2 clusters.")
        if self.k > n:
            raise ValueError(f"k={self.k} is larger than the number of sentences ({n}); choose k <= {n} or cache more rollouts.")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r}: expected one of {NORMALIZATIONS}.")

    def _fit_normalization(self, X: Tensor) -> Tensor:
        self.mean_ = X.mean(0) if "center" in self.normalize else torch.zeros(X.shape[1])
        self.n_features_in_ = int(X.shape[1])
        return self._normalize(X)

    def _normalize(self, X: Tensor) -> Tensor:
        Z = X - self.mean_
        if "l2" in self.normalize:
            Z = Z / Z.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return Z

    def check_is_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise ValueError(f"This {type(self).__name__} is not fitted yet. Call 'fit' with appropriate arguments before using this estimator.")

    def normalized(self, X: Any) -> Tensor:
        """``X`` with the stored normalisation applied: ``[n, d_model]``."""
        self.check_is_fitted()
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but this {type(self).__name__} was fit on {self.n_features_in_}: activations from another model or site?")
        return self._normalize(X)

    def scores(self, X: Any) -> Tensor:
        """Per-cluster affinity ``[n, k]`` (higher = more that cluster); ``predict`` is its argmax."""
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """Cluster of each row of raw activations ``X [n, d_model]``."""
        return self.scores(X).argmax(1).numpy()

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X, y).labels_

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params: Any) -> _Taxonomy:
        for k, v in params.items():
            if k not in self._param_names:
                raise ValueError(f"Unknown parameter {k!r} for {type(self).__name__}; valid: {', '.join(self._param_names)}.")
            setattr(self, k, v)
        return self

    def clone(self, **params: Any) -> _Taxonomy:
        """An unfitted copy with the same parameters (updated by ``params``)."""
        return type(self)(**{**self.get_params(), **params})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # ---------------------------------------------------------------- persistence
    def _tensors(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def _set_tensors(self, tensors: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike, *, site: str | None = None, fingerprint: str | None = None, extra: dict[str, Any] | None = None) -> Path:
        """Write ``taxonomy.safetensors`` + ``taxonomy.json`` (method, k, params, site, fingerprint); returns the JSON path.

        ``site`` and ``fingerprint`` default to the ones recorded by :func:`fit_from_cache` or ``load``.
        """
        self.check_is_fitted()
        d = Path(directory)
        meta = {
            "method": self.method,
            "k": int(self.k),
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "site": site if site is not None else getattr(self, "site_", None),
            "fingerprint": fingerprint if fingerprint is not None else getattr(self, "fingerprint_", None),
            "extra": extra if extra is not None else getattr(self, "extra_", {}),
        }
        return write_tensor_artifact(d / MODEL_JSON, {"mean": self.mean_, **self._tensors()}, meta)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> _Taxonomy:
        """Load a taxonomy saved by :meth:`save` (checks the tensor hash)."""
        est = load_taxonomy(directory)
        if not isinstance(est, cls):
            raise ValueError(f"{directory} holds a {type(est).__name__}, not a {cls.__name__}; use latentreason.taxonomy.load_taxonomy.")
        return est


class KMeansTaxonomy(_Taxonomy):
    """K-means on normalised sentence activations.

    Args:
        k: number of clusters.
        normalize: ``"center+l2"`` (default), ``"center"``, ``"l2"`` or ``"none"``; stored and re-applied.
        n_init: k-means restarts (best inertia wins).

    Example:
        >>> import numpy as np
        >>> X = np.r_[np.random.default_rng(0).normal(0, .1, (20, 4)) + [3, 0, 0, 0], np.random.default_rng(1).normal(0, .1, (20, 4)) - [3, 0, 0, 0]]
        >>> km = KMeansTaxonomy(k=2, random_state=0).fit(X)
        >>> int((km.predict(X) == km.labels_).all())
        1
    """

    method = "kmeans"
    _param_names = ("k", "normalize", "n_init", "max_iter", "random_state")

    def __init__(self, k: int = 5, *, normalize: str = "center+l2", n_init: int = 10, max_iter: int = 300, random_state: int = 0) -> None:
        self.k = k
        self.normalize = normalize
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> KMeansTaxonomy:
        """Fit on raw activations ``X [n_sentences, d_model]``; ``y`` is ignored."""
        from sklearn.cluster import KMeans

        X = _as_matrix(X)
        self._check_params(X.shape[0])
        Z = self._fit_normalization(X)
        km = KMeans(n_clusters=int(self.k), n_init=self.n_init, max_iter=self.max_iter, random_state=self.random_state).fit(Z.double().numpy())
        self.cluster_centers_ = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)  # [k, d] in normalised space
        self.inertia_ = float(km.inertia_)
        self.labels_ = self.predict(X)
        return self

    def transform(self, X: Any) -> Tensor:
        """Euclidean distance of each normalised row to each centroid: ``[n, k]``."""
        self.check_is_fitted()
        return torch.cdist(self.normalized(X).double(), self.cluster_centers_.double()).float()

    def scores(self, X: Any) -> Tensor:
        return -self.transform(X)

    def _tensors(self) -> dict[str, Tensor]:
        return {"cluster_centers": self.cluster_centers_}

    def _set_tensors(self, t: dict[str, Tensor]) -> None:
        self.cluster_centers_ = t["cluster_centers"]


def _kmeanspp_rows(Z: Tensor, k: int, g: torch.Generator) -> Tensor:
    """``k`` rows of ``Z`` chosen by k-means++ seeding (each next row with probability ~ squared distance)."""
    idx = [int(torch.randint(len(Z), (1,), generator=g))]
    d2 = ((Z - Z[idx[0]]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / len(d2))
        i = int(torch.multinomial(p, 1, generator=g))
        idx.append(i)
        d2 = torch.minimum(d2, ((Z - Z[i]) ** 2).sum(1))
    return Z[idx].clone()


class SAETaxonomy(_Taxonomy):
    """A top-k sparse autoencoder with ``k`` latents; cluster = argmax of the pre-top-k encoder output.

    ``pre = (z - b_dec) @ W_enc + b_enc``; codes keep the ``topk`` largest of ``relu(pre)``;
    ``z_hat = codes @ W_dec + b_dec`` with unit-norm decoder rows. Trained with Adam on the
    fraction of variance unexplained (FVU), early-stopped on a held-out ``val_fraction`` of rows.

    Args:
        k: number of latents = clusters.
        topk: active latents per sentence (clipped to ``k``).
        lr: Adam learning rate; default ``2e-4 / sqrt(k / 2**14)`` (the reference's scaling).
        batch_size, max_epochs, patience: as in the reference (512, 300, 10).
    """

    method = "sae"
    _param_names = ("k", "topk", "normalize", "lr", "batch_size", "max_epochs", "patience", "val_fraction", "random_state")

    def __init__(
        self,
        k: int = 5,
        topk: int = 3,
        *,
        normalize: str = "center+l2",
        lr: float | None = None,
        batch_size: int = 512,
        max_epochs: int = 300,
        patience: int = 10,
        val_fraction: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.topk = topk
        self.normalize = normalize
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.random_state = random_state

    # ------------------------------------------------------------------ model
    def _pre(self, Z: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
        return (Z - b_dec) @ W_enc + b_enc  # [n, k]

    def _codes(self, pre: Tensor) -> Tensor:
        kk = min(int(self.topk), int(self.k))
        vals, idx = pre.relu().topk(kk, dim=1)
        return torch.zeros_like(pre).scatter(1, idx, vals)

    @staticmethod
    def _fvu(Z: Tensor, Z_hat: Tensor) -> Tensor:
        return ((Z - Z_hat) ** 2).sum() / ((Z - Z.mean(0)) ** 2).sum().clamp_min(1e-12)

    def fit(self, X: Any, y: Any = None) -> SAETaxonomy:
        """Fit on raw activations ``X [n_sentences, d_model]``; ``y`` is ignored."""
        X = _as_matrix(X)
        n, d = X.shape
        self._check_params(n)
        if self.topk < 1:
            raise ValueError(f"topk={self.topk} must be at least 1.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must lie in (0, 1).")
        Z = self._fit_normalization(X)
        g = torch.Generator().manual_seed(int(self.random_state))
        perm = torch.randperm(n, generator=g)
        n_val = max(1, int(round(self.val_fraction * n))) if n >= 10 else 0
        val, train = (Z[perm[:n_val]], Z[perm[n_val:]]) if n_val else (Z, Z)
        # decoder initialised on k-means++-seeded training rows (unit norm): latents start on spread-out data
        init_rows = _kmeanspp_rows(train, int(self.k), g)
        W_dec = init_rows + 0.01 * torch.randn(init_rows.shape, generator=g)
        W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)).requires_grad_(True)  # [k, d]
        W_enc = W_dec.detach().T.clone().requires_grad_(True)  # [d, k]
        b_enc = torch.zeros(int(self.k), requires_grad=True)
        b_dec = train.mean(0).clone().requires_grad_(True)
        params = [W_enc, b_enc, W_dec, b_dec]
        lr = self.lr if self.lr is not None else 2e-4 / math.sqrt(self.k / 2**14)
        opt = torch.optim.Adam(params, lr=lr)
        best, best_state, bad, epochs = float("inf"), [p.detach().clone() for p in params], 0, 0
        for epoch in range(int(self.max_epochs)):
            epochs = epoch + 1
            order = torch.randperm(len(train), generator=g)
            for i in range(0, len(train), int(self.batch_size)):
                zb = train[order[i : i + int(self.batch_size)]]
                if len(zb) < 2:
                    continue
                z_hat = self._codes(self._pre(zb, W_enc, b_enc, b_dec)) @ W_dec + b_dec
                loss = self._fvu(zb, z_hat)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
            with torch.no_grad():
                v = float(self._fvu(val, self._codes(self._pre(val, W_enc, b_enc, b_dec)) @ W_dec + b_dec))
            if v < best - 1e-6:
                best, best_state, bad = v, [p.detach().clone() for p in params], 0
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.W_enc_, self.b_enc_, self.W_dec_, self.b_dec_ = best_state
        self.val_fvu_ = best
        self.n_epochs_ = epochs
        self.labels_ = self.predict(X)
        return self

    def scores(self, X: Any) -> Tensor:
        """Pre-top-k encoder output ``[n, k]`` (the cluster is its argmax)."""
        Z = self.normalized(X)
        return self._pre(Z, self.W_enc_, self.b_enc_, self.b_dec_)

    def transform(self, X: Any) -> Tensor:
        """Sparse codes ``[n, k]``: the top-k of ``relu(scores)``."""
        return self._codes(self.scores(X))

    def reconstruct(self, X: Any) -> Tensor:
        """Reconstruction in normalised space ``[n, d_model]``."""
        return self.transform(X) @ self.W_dec_ + self.b_dec_

    def _tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc_, "b_enc": self.b_enc_, "W_dec": self.W_dec_, "b_dec": self.b_dec_}

    def _set_tensors(self, t: dict[str, Tensor]) -> None:
        self.W_enc_, self.b_enc_, self.W_dec_, self.b_dec_ = t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]


_CLASSES: dict[str, type[_Taxonomy]] = {"kmeans": KMeansTaxonomy, "sae": SAETaxonomy}


def make_taxonomy(method: str, k: int, *, random_state: int = 0, **params: Any) -> _Taxonomy:
    """An unfitted estimator by method name (``"kmeans"`` or ``"sae"``)."""
    if method not in _CLASSES:
        raise ValueError(f"Unknown taxonomy method {method!r}: expected one of {', '.join(METHODS)}.")
    return _CLASSES[method](k=k, random_state=random_state, **params)


def load_taxonomy(directory: str | os.PathLike) -> _Taxonomy:
    """Load a saved taxonomy estimator; sets ``site_``, ``fingerprint_`` and ``extra_`` from its JSON."""
    from latentreason.manifest import check_finished

    d = Path(directory)
    if not (d / MODEL_JSON).exists():
        raise FileNotFoundError(f"{d} holds no taxonomy ({MODEL_JSON} is missing). Create one with `latentreason taxonomy --out {d}`.")
    check_finished(d)
    meta, t = read_tensor_artifact(d / MODEL_JSON, required=("method", "params", "n_features_in"), what="taxonomy")
    method = meta.get("method")
    if method not in _CLASSES:
        raise ValueError(f"{d / MODEL_JSON}: unknown taxonomy method {method!r}.")
    est = _CLASSES[method](**meta["params"])
    est.mean_ = t.pop("mean")
    est.n_features_in_ = int(meta["n_features_in"])
    est._set_tensors(t)
    est.site_ = meta.get("site")
    est.fingerprint_ = meta.get("fingerprint")
    est.extra_ = meta.get("extra", {})
    return est


# ------------------------------------------------------------------------ metrics


def silhouette(Z: Tensor, labels: np.ndarray, *, sample_size: int = 2000, random_state: int = 0) -> float:
    """Silhouette of ``labels`` on normalised rows (NaN with fewer than 2 non-empty clusters)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    n = min(sample_size, len(labels))
    return float(silhouette_score(Z.double().numpy(), labels, sample_size=n if n < len(labels) else None, random_state=random_state))


def centroid_orthogonality(Z: Tensor, labels: np.ndarray) -> float:
    """Mean ``|cos|`` between the clusters' mean normalised rows, over pairs (0 = orthogonal).

    With centring and k = 2 the two means are anti-parallel by construction (|cos| = 1).
    """
    ids = np.unique(labels)
    if len(ids) < 2:
        return float("nan")
    C = torch.stack([Z[torch.as_tensor(labels == c)].mean(0) for c in ids]).double()
    C = C / C.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (C @ C.T).abs()
    iu = torch.triu_indices(len(ids), len(ids), 1)
    return float(cos[iu[0], iu[1]].mean())


def stability(estimator: _Taxonomy, X: Any, *, n_seeds: int = 3, labels: Sequence[np.ndarray] | None = None) -> tuple[float, list[np.ndarray]]:
    """Mean pairwise ARI between the labels of ``n_seeds`` fits with seeds ``random_state + i``.

    Returns ``(stability, labels per seed)``; pass ``labels`` to reuse fits already made.
    """
    from sklearn.metrics import adjusted_rand_score

    if n_seeds < 2:
        raise ValueError(f"n_seeds={n_seeds}: stability needs at least 2 seeds (3 recommended).")
    runs = list(labels or [])
    for i in range(len(runs), n_seeds):
        runs.append(estimator.clone(random_state=int(estimator.random_state) + i).fit(X).labels_)
    aris = [adjusted_rand_score(runs[a], runs[b]) for a in range(n_seeds) for b in range(a + 1, n_seeds)]
    return float(np.mean(aris)), runs


def planted_agreement(labels: np.ndarray, planted: Sequence[str | None]) -> dict[str, float | int]:
    """ARI, NMI, homogeneity and completeness of ``labels`` against planted labels, over sentences that have one."""
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure, normalized_mutual_info_score

    keep = np.array([p is not None for p in planted])
    if len(planted) != len(labels):
        raise ValueError(f"{len(planted)} planted labels for {len(labels)} sentences: they must align with the cache's sentences.")
    if keep.sum() == 0:
        return {}
    y = np.array([p for p in planted if p is not None])
    lab = np.asarray(labels)[keep]
    hom, comp, _ = homogeneity_completeness_v_measure(y, lab)
    # homogeneity near 1 with lower ARI: clusters are pure but split a planted strategy into sub-strategies
    return {
        "ari_planted": float(adjusted_rand_score(y, lab)),
        "nmi_planted": float(normalized_mutual_info_score(y, lab)),
        "homogeneity_planted": float(hom),
        "completeness_planted": float(comp),
        "n_planted": int(keep.sum()),
    }


def evaluate(estimator: _Taxonomy, X: Any, planted: Sequence[str | None] | None = None, *, n_seeds: int = 3) -> dict[str, Any]:
    """All LLM-free quality metrics of a fitted estimator on ``X`` (its training data)."""
    estimator.check_is_fitted()
    Z = estimator.normalized(X)
    labels = estimator.predict(X)
    stab, _ = stability(estimator, X, n_seeds=n_seeds, labels=[labels])
    sizes = np.bincount(labels, minlength=int(estimator.k))
    out: dict[str, Any] = {
        "method": estimator.method,
        "k": int(estimator.k),
        "silhouette": silhouette(Z, labels, random_state=int(estimator.random_state)),
        "orthogonality": centroid_orthogonality(Z, labels),
        "stability_ari": stab,
        "n_seeds": n_seeds,
        "n_sentences": int(len(labels)),
        "n_empty_clusters": int((sizes == 0).sum()),
    }
    if planted is not None:
        out.update(planted_agreement(labels, planted))
    return out


# ------------------------------------------------------------- cluster descriptions

_TOKEN = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def _features(text: str) -> set[str]:
    toks = _TOKEN.findall(text)
    return set(toks) | ({"^" + toks[0]} if toks else set())  # "^X": the sentence starts with X


def distinctive_tokens(texts: Sequence[str], labels: np.ndarray, k: int, n: int = 3) -> list[list[str]]:
    """Per cluster, the ``n`` tokens most over-represented in its sentences.

    Tokens are words, digits and symbols, plus ``^X`` for a sentence's first token. Score =
    ``p(t|c) * log(p(t|c) / p(t|not c))`` (a tf-idf-style contrast, smoothed), positive only.
    """
    feats = [_features(t) for t in texts]
    labels = np.asarray(labels)
    out: list[list[str]] = []
    for c in range(k):
        inside = [f for f, l in zip(feats, labels) if l == c]
        outside = [f for f, l in zip(feats, labels) if l != c]
        if not inside:
            out.append([])
            continue
        cin, cout = Counter(t for f in inside for t in f), Counter(t for f in outside for t in f)
        scored = []
        for t, m in cin.items():
            p_in = (m + 0.5) / (len(inside) + 1)
            p_out = (cout[t] + 0.5) / (len(outside) + 1)
            s = p_in * math.log(p_in / p_out)
            if s > 0:
                scored.append((-s, t))
        out.append([t for _, t in sorted(scored)[:n]])
    return out


def auto_label(tokens: Sequence[str]) -> str:
    """A short label from distinctive tokens, starts first: ``[":", "^S", "+"]`` -> ``"S… : +"``."""
    if not tokens:
        return "(empty)"
    ordered = [t for t in tokens if t.startswith("^")] + [t for t in tokens if not t.startswith("^")]  # how it starts, first
    return " ".join(t[1:] + "…" if t.startswith("^") else t for t in ordered)


def describe_clusters(estimator: _Taxonomy, X: Any, texts: Sequence[str], planted: Sequence[str | None] | None = None, *, n_top: int = 5) -> list[dict[str, Any]]:
    """Per cluster: size, automatic label, distinctive tokens, top-activating sentences, planted mix."""
    if len(texts) != len(X):
        raise ValueError(f"{len(texts)} texts for {len(X)} activation rows: they must align.")
    scores = estimator.scores(X)
    labels = scores.argmax(1).numpy()
    k = int(estimator.k)
    toks = distinctive_tokens(texts, labels, k)
    out = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        order = idx[np.argsort(-scores[idx, c].numpy(), kind="stable")][:n_top]
        rec: dict[str, Any] = {
            "cluster": c,
            "label": auto_label(toks[c]),
            "tokens": toks[c],
            "size": int(len(idx)),
            "top_sentences": [{"index": int(i), "text": texts[i], "score": float(scores[i, c])} for i in order],
        }
        if planted is not None:
            mix = Counter(planted[i] for i in idx if planted[i] is not None)
            rec["planted"] = dict(mix.most_common())
            rec["planted_majority"] = mix.most_common(1)[0][0] if mix else None
        out.append(rec)
    return out


# ------------------------------------------------------------------------ sweep


def sweep(
    X: Any,
    ks: Sequence[int],
    methods: Sequence[str] = ("kmeans",),
    *,
    planted: Sequence[str | None] | None = None,
    n_seeds: int = 3,
    random_state: int = 0,
    stability_min: float = STABILITY_MIN,
    params: dict[str, dict[str, Any]] | None = None,
) -> tuple[_Taxonomy, list[dict[str, Any]]]:
    """Fit every (method, k), score it, and pick one by a rule blind to planted labels.

    Rule: among candidates whose stability (mean pairwise ARI over ``n_seeds`` seeds) is at
    least ``stability_min``, take the highest silhouette; ties (within 1e-3) go to the smaller
    k, then to k-means. If no candidate is stable enough, the most stable one is taken.
    Planted-label ARI/NMI are computed for the report only; they never enter the choice.

    Returns ``(chosen fitted estimator, one metrics row per candidate)``; the chosen row has
    ``"chosen": True``.
    """
    X = _as_matrix(X)
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("sweep needs at least one k.")
    if ks[-1] > X.shape[0]:
        raise ValueError(f"k={ks[-1]} is larger than the number of sentences ({X.shape[0]}); choose k <= {X.shape[0]} or cache more rollouts.")
    for m in methods:
        if m not in _CLASSES:
            raise ValueError(f"Unknown taxonomy method {m!r}: expected one of {', '.join(METHODS)}.")
    rows: list[dict[str, Any]] = []
    fitted: list[_Taxonomy] = []
    for m in methods:
        for k in ks:
            est = make_taxonomy(m, k, random_state=random_state, **(params or {}).get(m, {})).fit(X)
            rows.append(evaluate(est, X, planted, n_seeds=n_seeds))
            fitted.append(est)
            log.info("taxonomy sweep %s k=%d: silhouette %.3f stability %.3f", m, k, rows[-1]["silhouette"], rows[-1]["stability_ari"])

    def sil(r: dict[str, Any]) -> float:
        return -1.0 if math.isnan(r["silhouette"]) else r["silhouette"]

    stable = [i for i, r in enumerate(rows) if r["stability_ari"] >= stability_min]
    if stable:
        top = max(sil(rows[i]) for i in stable)
        near = [i for i in stable if sil(rows[i]) >= top - 1e-3]
        best = min(near, key=lambda i: (rows[i]["k"], METHODS.index(rows[i]["method"])))
    else:
        best = max(range(len(rows)), key=lambda i: rows[i]["stability_ari"])
        log.warning("No taxonomy candidate reached stability %.2f; taking the most stable (%s k=%d).", stability_min, rows[best]["method"], rows[best]["k"])
    for i, r in enumerate(rows):
        r["chosen"] = i == best
    return fitted[best], rows


DEFAULT_K = "2-8"  # the K sweep when none is given (chosen by stability, then silhouette)


def default_ks(n_sentences: int, spec: str = DEFAULT_K) -> str:
    """The default K sweep, never with more clusters than there are sentences: ``"2-8"``, or ``"2-n"`` for n < 8."""
    if n_sentences < 2:
        raise ValueError(f"The cache holds {n_sentences} sentence(s); discovering strategies needs at least 2. Generate more or longer rollouts.")
    ks = [k for k in parse_ks(spec) if k <= n_sentences]
    return ",".join(map(str, ks))


def parse_ks(spec: str | int | Sequence[int]) -> list[int]:
    """``"5"`` -> [5]; ``"2-8"`` -> [2..8]; ``"3,5,8"`` -> [3, 5, 8]."""
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        return [int(k) for k in spec]
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out += list(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"Cannot parse k={spec!r}: write e.g. 5, 2-8 or 3,5,8.") from None
    if not out or min(out) < 2:
        raise ValueError(f"k={spec!r}: every k must be at least 2.")
    return sorted(set(out))


# ------------------------------------------------------------------ cache glue


def cache_site_check(cache: Any, site: str) -> str:
    """The site's canonical name; raises if the cache has no activations there.

    A depth fraction (``resid_post@0.4``) is resolved as the cache resolved it: against its base
    model's layer count, recorded in the cache's manifest.
    """
    from latentreason.sites import HookSite, is_depth_site, site_at_depth

    if is_depth_site(site):
        layers = (getattr(getattr(cache, "manifest", None), "extra", None) or {}).get("n_layers") or {}
        n = layers.get("base", next(iter(layers.values()), None))
        if n is None:
            raise ValueError(f"Site {site!r} is a depth fraction, but the activation cache does not record its models' layer count (made before it did): name the layer instead, one of {', '.join(cache.sites)}.")
        site = str(site_at_depth(site, int(n)))
    name = str(HookSite.parse(site))
    if name not in [str(HookSite.parse(s)) for s in cache.sites]:
        raise ValueError(f"The activation cache has no site {name!r} (it has {', '.join(cache.sites)}). Pick one of those, or re-run `latentreason cache --sites {name}`.")
    return name


def cache_hash(cache_dir: str | os.PathLike) -> str | None:
    """sha256 of the cache's manifest.json (identifies the cache in provenance), None if absent."""
    p = Path(cache_dir) / "manifest.json"
    return sha256_file(p) if p.exists() else None


DEFAULT_POOLING = "head:3"  # strategies announce themselves in a sentence's opening tokens


def fit_from_cache(
    cache: Any,
    site: str,
    ks: str | int | Sequence[int],
    methods: Sequence[str] = ("kmeans",),
    *,
    model: str = "post_rl",
    n_seeds: int = 3,
    random_state: int = 0,
    pooling: str = DEFAULT_POOLING,
    roles: str | Sequence[str] | None = None,
) -> tuple[_Taxonomy, dict[str, Any], list[dict[str, Any]]]:
    """Fit a taxonomy on the cache's post-RL sentence-pooled activations at ``site``.

    Only sentences of rollouts that the models ``roles`` generated are clustered (default: the
    post-RL model's own traces, :data:`~latentreason.cache.STRATEGY_ROLES`), read through
    ``model``'s activations. The roles are recorded on the estimator (``extra_["roles"]``) and in
    the metrics.

    Returns ``(estimator, metrics of the chosen one, sweep rows)``; the estimator carries
    ``site_`` and ``fingerprint_`` for :meth:`save`.
    """
    from latentreason.cache import parse_roles

    site = cache_site_check(cache, site)
    roles = parse_roles(roles)
    cache = cache.generated_by(roles)
    X = cache.sentence_pooled(site, model, pooling)  # [n_sentences, d]
    ks = parse_ks(ks)
    planted = [s.get("label") for s in cache.sentences]
    has_planted = any(p is not None for p in planted)
    n = int(X.shape[0])
    if max(ks) > n:
        raise ValueError(f"k={max(ks)} is larger than the number of sentences the cache holds from {', '.join(roles)} rollouts ({n}); choose k <= {n} or cache more rollouts.")
    est, rows = sweep(X, ks, methods, planted=planted if has_planted else None, n_seeds=n_seeds, random_state=random_state)
    est.site_ = site
    est.fingerprint_ = cache.fingerprint(model)
    est.extra_ = {"model": model, "pooling": pooling, "roles": list(roles)}  # how sentences were chosen and pooled travels with the artifact
    metrics = dict(next(r for r in rows if r["chosen"]))
    metrics.pop("chosen", None)
    metrics["site"] = site
    metrics["pooling"] = pooling
    metrics["roles"] = list(roles)
    return est, metrics, rows


TAXONOMY_FILES = (MODEL_JSON, MODEL_TENSORS, "labels.json", "clusters.json", "metrics.json")


def write_taxonomy(
    out: str | os.PathLike,
    estimator: _Taxonomy,
    cache: Any,
    metrics: dict[str, Any],
    rows: list[dict[str, Any]] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    model: str = "post_rl",
    n_top: int = 5,
    config: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write the taxonomy artifact: estimator files, labels.json, clusters.json, metrics.json, manifest.json.

    ``config`` is what determined the fit (default: the estimator's site, method, k, pooling,
    seed and roles); a taxonomy with another config already in ``out`` is refused unless ``force``.
    To fit only when needed, use :func:`build_taxonomy`. ``labels.json`` covers the sentences of
    the rollouts the estimator was fit on (the generator roles in ``estimator.extra_["roles"]``,
    default post-RL only).
    """
    from latentreason.cache import parse_roles
    from latentreason.stage import REUSE, open_stage

    site = getattr(estimator, "site_", None)
    if site is None:
        raise ValueError("The taxonomy records no site: fit it with fit_from_cache, or set estimator.site_ to the site its activations came from.")
    if config is None:
        params = estimator.get_params()
        extra = getattr(estimator, "extra_", {})
        config = {"site": site, "methods": [estimator.method], "ks": [int(estimator.k)], "pooling": extra.get("pooling", "mean"), "random_state": params.get("random_state"), "model": model, "n_top": n_top, "roles": list(parse_roles(extra.get("roles")))}
    with open_stage(out, TAXONOMY_KIND, config, {"activations": cache.manifest.digest()}, owns=TAXONOMY_FILES, force=force) as st:
        if st.state == REUSE:
            st.restart()
        return _write_taxonomy_files(st, estimator, cache, metrics, rows, cache_dir=cache_dir, model=model, n_top=n_top)


def build_taxonomy(
    cache_dir: str | os.PathLike,
    out: str | os.PathLike,
    site: str | None = None,
    ks: str | int | Sequence[int] | None = None,
    methods: Sequence[str] = ("kmeans",),
    *,
    n_seeds: int = 3,
    random_state: int = 0,
    pooling: str = DEFAULT_POOLING,
    model: str = "post_rl",
    n_top: int = 5,
    roles: str | Sequence[str] | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """The taxonomy stage: fit on the cache at ``cache_dir`` into ``out`` unless a taxonomy with these settings is there.

    Returns ``(out, metrics of the chosen fit, sweep rows)``. A taxonomy with other settings, or
    fit on another cache, is refused with the differing keys named (``force=True`` replaces it).
    """
    from latentreason.cache import ActivationCache, parse_pooling, parse_roles
    from latentreason.stage import REUSE, open_stage

    roles = list(parse_roles(roles))
    cache = ActivationCache.open(cache_dir)
    site = cache_site_check(cache, site if site is not None else cache.sites[0])  # default: the cache's first site
    ks_list = parse_ks(ks if ks is not None else default_ks(len(cache.generated_by(roles).sentences)))  # default: the documented sweep
    parse_pooling(pooling)  # raises on a bad pooling before the stage starts
    config = {"site": site, "methods": list(methods), "ks": ks_list, "pooling": pooling, "random_state": random_state, "n_seeds": n_seeds, "model": model, "n_top": n_top, "roles": roles}
    with open_stage(out, TAXONOMY_KIND, config, {"activations": cache.manifest.digest()}, owns=TAXONOMY_FILES, force=force) as st:
        if st.state == REUSE:
            metrics = read_json(st.path("metrics.json"))
            rows = metrics.pop("sweep", None) or [{**metrics, "chosen": True}]
            return st.directory, metrics, rows
        est, metrics, rows = fit_from_cache(cache, site, ks_list, methods, model=model, n_seeds=n_seeds, random_state=random_state, pooling=pooling, roles=roles)
        return _write_taxonomy_files(st, est, cache, metrics, rows, cache_dir=cache_dir, model=model, n_top=n_top), metrics, rows


def _write_taxonomy_files(st, estimator: _Taxonomy, cache: Any, metrics: dict[str, Any], rows: list[dict[str, Any]] | None, *, cache_dir, model: str, n_top: int) -> Path:
    from latentreason.cache import parse_roles
    from latentreason.manifest import Manifest

    d = st.directory
    site = estimator.site_
    roles = list(parse_roles(getattr(estimator, "extra_", {}).get("roles")))
    cache = cache.generated_by(roles)
    X = cache.sentence_pooled(site, model, getattr(estimator, "extra_", {}).get("pooling", "mean"))
    sents = cache.sentences
    planted = [s.get("label") for s in sents]
    has_planted = any(p is not None for p in planted)
    labels = estimator.predict(X)
    clusters = describe_clusters(estimator, X, [s["text"] for s in sents], planted if has_planted else None, n_top=n_top)
    estimator.save(d, extra={**getattr(estimator, "extra_", {}), "cluster_labels": [c["label"] for c in clusters]})
    write_json(d / "labels.json", {
        "site": site,
        "method": estimator.method,
        "k": int(estimator.k),
        "sentences": [{"rollout_id": s["rollout_id"], "index": s["index"], "cluster": int(l), "planted": s.get("label")} for s, l in zip(sents, labels)],
    })
    write_json(d / "clusters.json", {"site": site, "method": estimator.method, "k": int(estimator.k), "clusters": clusters})
    write_json(d / "metrics.json", {**metrics, **({"sweep": rows} if rows and len(rows) > 1 else {})})
    models = {model: {"path": "", "fingerprint": cache.fingerprint(model)}}
    if cache_dir is not None:
        try:
            cm = Manifest.read(cache_dir)
            if model in cm.models:
                models[model] = dict(cm.models[model])
        except FileNotFoundError:
            pass
    st.complete(
        TAXONOMY_FILES,
        models=models,
        extra={"chosen": {"method": estimator.method, "k": int(estimator.k), "params": estimator.get_params()}, "roles": roles, "cache": str(cache_dir) if cache_dir else None, "cache_manifest_sha256": cache_hash(cache_dir) if cache_dir else None},
    )
    return d
