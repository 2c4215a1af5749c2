"""Routers: decide, at each generated token, whether to steer the base model and with which vector.

A router reads the post-RL model's activation at the current token, ``x [batch, d_model]``,
and returns ``decisions [batch]``: ``-1`` for "no steer", else the index of a strategy vector.
Routers are scikit-learn-style estimators (``fit`` / ``predict``) that store their own
normalisation and save as safetensors + JSON.

* :class:`ProbeRouter` — honest: a linear probe predicting which strategy starts next.
* :class:`OracleRouter` — steers where base and post-RL next tokens disagree: reads the
  post-RL model's logits, so it is always labelled an **oracle**.
* :class:`RandomTimingRouter` — control: the probe's vector choice at random tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentreason.io import read_json, read_tensor_artifact, write_tensor_artifact
from latentreason.sites import HookSite

NONE = -1


class NotFittedError(ValueError, AttributeError):
    pass


@dataclass
class RouteContext:
    """What the engine tells a router besides the activation."""

    step: int
    base_logits: Tensor | None = None  # [batch, vocab], only for routers with needs_logits
    post_rl_logits: Tensor | None = None


class ProbeRouter:
    """Multinomial logistic probe on post-RL activations: class 0 = no new strategy, k+1 = strategy k starts next.

    Steers with the most probable strategy when its probability reaches ``threshold``.
    """

    is_oracle = False
    needs_logits = False
    kind = "probe"

    def __init__(self, strategies: list[str], site: str, threshold: float = 0.5, C: float = 1.0, max_iter: int = 500, random_state: int = 0) -> None:
        self.strategies = list(strategies)
        self.site = str(HookSite.parse(site))
        self.threshold = threshold
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state
        self.fingerprint: str | None = None  # of the post-RL model it reads

    # ------------------------------------------------------------ fitting

    def fit(self, X: Tensor | np.ndarray, y: Tensor | np.ndarray, fingerprint: str | None = None) -> ProbeRouter:
        """``X [n, d]`` post-RL activations; ``y [n]`` in ``{-1, 0..K-1}`` (-1: no strategy starts next)."""
        from sklearn.linear_model import LogisticRegression

        X = torch.as_tensor(X, dtype=torch.float32)
        y = np.asarray(torch.as_tensor(y)).astype(int)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X must be [n, d] and y [n]; got X {tuple(X.shape)} and y {y.shape}.")
        if y.min() < NONE or y.max() >= len(self.strategies):
            raise ValueError(f"Labels must lie in -1..{len(self.strategies) - 1} (strategies {self.strategies}); got {y.min()}..{y.max()}.")
        self.mean_ = X.mean(0)
        self.scale_ = (X - self.mean_).norm(dim=1).mean().clamp(min=1e-6)
        Z = ((X - self.mean_) / self.scale_).numpy()
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        clf.fit(Z, y + 1)
        K = len(self.strategies) + 1
        coef = np.zeros((K, Z.shape[1]), dtype=np.float32)
        inter = np.full(K, -1e4, dtype=np.float32)  # classes absent from training data are never predicted
        classes = clf.classes_.astype(int)
        if len(classes) == 2:  # binary sklearn model: one row for the positive class
            coef[classes[1]], inter[classes[1]] = clf.coef_[0], clf.intercept_[0]
            coef[classes[0]], inter[classes[0]] = 0.0, 0.0
        else:
            coef[classes], inter[classes] = clf.coef_, clf.intercept_
        self.coef_ = torch.from_numpy(coef)  # [K+1, d]
        self.intercept_ = torch.from_numpy(inter)  # [K+1]
        self.fingerprint = fingerprint
        return self

    def _check(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet. Call 'fit' with post-RL activations and labels first.")

    # ------------------------------------------------------------ inference

    def predict_proba(self, X: Tensor) -> Tensor:
        """``[n, K+1]`` probabilities; column 0 is "no new strategy"."""
        self._check()
        X = torch.as_tensor(X)
        if X.shape[-1] != self.coef_.shape[1]:
            raise ValueError(f"Router expects activations of width {self.coef_.shape[1]}, got {X.shape[-1]}: a router trained on another model or site.")
        if self.coef_.device != X.device:
            self.mean_, self.scale_, self.coef_, self.intercept_ = (t.to(X.device) for t in (self.mean_, self.scale_, self.coef_, self.intercept_))
        Z = (X.float() - self.mean_) / self.scale_
        return torch.softmax(torch.addmm(self.intercept_, Z, self.coef_.T), dim=-1)

    def scores(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Best strategy index ``[n]`` and its probability ``[n]``."""
        p = self.predict_proba(X)[:, 1:]
        best = p.max(dim=-1)
        return best.indices, best.values

    def predict(self, X: Tensor, ctx: RouteContext | None = None) -> Tensor:
        idx, val = self.scores(X)
        return torch.where(val >= self.threshold, idx, torch.full_like(idx, NONE))

    def threshold_for_budget(self, X: Tensor, budget: float) -> float:
        """The threshold at which the share of rows of ``X`` that get steered is ``budget``."""
        check_budget(budget)
        _, val = self.scores(X)
        if budget <= 0:
            return float("inf")
        return float(torch.quantile(val.float(), 1 - budget))

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``router.safetensors`` + ``router.json``, each carrying the other's hash; returns the JSON path."""
        self._check()
        d = Path(directory)
        meta = {
            "kind": self.kind,
            "is_oracle": self.is_oracle,
            "strategies": self.strategies,
            "site": self.site,
            "threshold": self.threshold,
            "C": self.C,
            "max_iter": self.max_iter,
            "random_state": self.random_state,
            "fingerprint": self.fingerprint,
        }
        return write_tensor_artifact(d / "router.json", {"mean": self.mean_, "scale": self.scale_.reshape(1), "coef": self.coef_, "intercept": self.intercept_}, meta)

    @classmethod
    def load(cls, directory: str | os.PathLike, threshold: float | None = None) -> ProbeRouter:
        """A router saved by :meth:`save`; an edited ``router.json`` (site, threshold, ...) is refused.

        ``threshold`` replaces the one it was saved with (the caller's config decides routing).
        """
        from latentreason.manifest import check_finished

        d = Path(directory)
        check_finished(d)
        meta = read_json(d / "router.json")
        if not isinstance(meta, dict) or meta.get("kind") != cls.kind:
            raise ValueError(f"{d} holds a {meta.get('kind') if isinstance(meta, dict) else None!r} router, not a probe router.")
        meta, t = read_tensor_artifact(d / "router.json", required=("strategies", "site", "threshold", "C", "max_iter", "random_state"), what="router")
        r = cls(meta["strategies"], meta["site"], meta["threshold"] if threshold is None else check_budget(threshold), meta["C"], meta["max_iter"], meta["random_state"])
        r.mean_, r.scale_, r.coef_, r.intercept_ = t["mean"], t["scale"][0], t["coef"], t["intercept"]
        r.fingerprint = meta.get("fingerprint")
        return r

    def check_model(self, site: str, fingerprint: str) -> None:
        """Refuse to route for a model or site other than the one the probe was trained on."""
        if str(HookSite.parse(site)) != self.site:
            raise ValueError(f"This router was trained at {self.site}, not {site}. Train a router at {site} or route at {self.site}.")
        if self.fingerprint is not None and fingerprint != self.fingerprint:
            raise ValueError(f"This router was trained on post-RL model {self.fingerprint}, not {fingerprint}. Retrain it for this model.")


class OracleRouter:
    """ORACLE: steer where the base and post-RL models' greedy next tokens disagree (the reference paper's gate).

    The vector is the inner router's best strategy at that token. Reads the post-RL model's logits.
    """

    is_oracle = True
    needs_logits = True
    kind = "oracle"

    def __init__(self, inner: ProbeRouter) -> None:
        self.inner = inner
        self.strategies = inner.strategies
        self.site = inner.site

    def predict(self, X: Tensor, ctx: RouteContext | None = None) -> Tensor:
        if ctx is None or ctx.base_logits is None or ctx.post_rl_logits is None:
            raise ValueError("The oracle router needs both models' logits; run it through the hybrid engine.")
        idx, _ = self.inner.scores(X)
        disagree = ctx.base_logits.argmax(-1) != ctx.post_rl_logits.argmax(-1)
        return torch.where(disagree.to(idx.device), idx, torch.full_like(idx, NONE))


class RandomTimingRouter:
    """Control: steer a random ``budget`` share of tokens, with the vector the inner router would choose there."""

    is_oracle = False
    needs_logits = False
    kind = "random_timing"

    def __init__(self, inner: ProbeRouter, budget: float, seed: int = 0) -> None:
        self.inner = inner
        self.strategies = inner.strategies
        self.site = inner.site
        self.budget = check_budget(budget)
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)

    def predict(self, X: Tensor, ctx: RouteContext | None = None) -> Tensor:
        idx, _ = self.inner.scores(X)
        fire = torch.rand(X.shape[0], generator=self._gen) < self.budget
        return torch.where(fire.to(idx.device), idx, torch.full_like(idx, NONE))


def check_budget(budget: float) -> float:
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"Budget {budget!r} is not a number: give a share of tokens in [0, 1].") from None
    if not 0.0 <= b <= 1.0 or b != b:
        raise ValueError(f"Budget {budget} is outside [0, 1]: it is the share of generated tokens steered.")
    return b


def load_router(directory: str | os.PathLike) -> ProbeRouter:
    d = Path(directory)
    if not (d / "router.json").exists():
        raise FileNotFoundError(f"{d} holds no router (router.json missing). Train one with `latentreason recover` or routers.ProbeRouter.fit.")
    kind = read_json(d / "router.json").get("kind")
    if kind == "probe":
        return ProbeRouter.load(d)
    raise ValueError(f"{d}: unknown router kind {kind!r}.")
