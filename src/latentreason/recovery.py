"""Recovery curves: how much of the RL gain the steered base model recovers, with controls.

``run_recovery(pair, out)`` builds whatever the run directory lacks (rollouts, cache,
categories, vectors, router), then evaluates on a held-out split: the base and post-RL
models, the hybrid across alphas and router thresholds, and the controls — norm-matched
random vectors (several seeds), the right vectors at random tokens (same budget), the bias
vector alone, the chosen vector at every token, swapped vectors, steering only the first
decision, and the oracle router (labelled). Every point is saved as it finishes, so an
interrupted run resumes without recomputing finished points.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentreason.extract import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS
from latentreason.hybrid import HybridEngine, HybridResult
from latentreason.io import read_json, write_json
from latentreason.pair import ModelPair
from latentreason.routers import NONE, OracleRouter, ProbeRouter, RandomTimingRouter, RouteContext, check_budget
from latentreason.rundir import RunDir
from latentreason.stats import bootstrap_mean, bootstrap_recovery
from latentreason.vectors import SteeringVector

log = logging.getLogger(__name__)

RECOVERY_FILE = "recovery.json"


@dataclass(frozen=True)
class RecoverConfig:
    """Defaults of ``latentreason recover`` (documented in the README)."""

    n_train: int = 400  # post-RL rollouts for the cache, vectors and router (train split)
    n_dev: int = 200  # problems for choosing alpha (dev split)
    n_test: int = 600  # held-out evaluation problems (test split)
    site: str | None = None  # base-model site for vectors; default: the pair's default site
    router_site: str | None = None  # post-RL site the router reads; default: the pair's router_site, else site
    taxonomy: str = "auto"  # "auto" (planted labels if the task has them, else kmeans), "planted", "kmeans", "sae" or a taxonomy directory
    k: int | None = None  # clusters for a discovered taxonomy (default: sweep 2..8)
    method: str = "optimized"  # vector extraction method: on the organism, diffmeans vectors barely move the base at mid-trace switches (see README)
    vector_batch_size: int = DEFAULT_BATCH_SIZE  # 32; optimised vectors (and the bias vector): examples per optimiser step
    vector_max_tokens: int | None = DEFAULT_MAX_TOKENS  # 4096; optimised vectors: padded tokens per forward pass; bounds their peak memory, not their values
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    thresholds: tuple[float, ...] = (0.95, 0.8, 0.5, 0.3, 0.1, 0.02)
    threshold: float = 0.5  # router threshold used for the alpha curve and the controls
    budgets: tuple[float, ...] = ()  # if given: target budgets, each turned into a threshold on the router's training tokens
    random_seeds: int = 5
    decodings: tuple[str, ...] = ("greedy", "sampled")
    temperature: float = 1.0  # for sampled decoding
    max_new_tokens: int | None = None
    batch_size: int = 256  # problems decoded together (lower it for large models; sampled results depend on it through per-batch seeds)
    controls: bool = True
    oracle: bool = True
    interventions: bool = True  # also place the pair's other models (single-problem RL) and a single-problem SFT on the curves
    n_boot: int = 2000
    seed: int = 0
    task: str | None = None
    data: str | None = None
    vectors: str | None = None  # a vectors directory to use instead of extracting (copied into the run; the source is never changed)
    router: str | None = None  # a trained router directory to use instead of fitting one (copied likewise)

    def __post_init__(self) -> None:
        from latentreason.extract import check_batching
        from latentreason.sites import check_site_name
        from latentreason.validate import check_finite, check_nonnegative, check_positive

        for name in ("n_train", "n_dev", "n_test", "batch_size", "n_boot"):
            check_positive(name, getattr(self, name))
        if self.n_train < 2:  # every run trains the bias vector, whose held-out split needs two rollouts
            raise ValueError(f"--n-train {self.n_train} (n_train): the bias and optimised vectors hold out whole rollouts to stop training, so they need at least 2 training rollouts; pass --n-train 2 or more.")
        try:
            check_batching(self.vector_batch_size, self.vector_max_tokens)
        except ValueError as e:
            raise ValueError(f"{e} (On the command line: --vector-batch-size / --vector-max-tokens.)") from None
        if self.max_new_tokens is not None:
            check_positive("max_new_tokens", self.max_new_tokens)
        check_nonnegative("random_seeds", self.random_seeds)
        check_finite("temperature", self.temperature, low=0.0, low_open=True)
        if self.k is not None and (check_positive("k", self.k) < 2):
            raise ValueError(f"k={self.k}: a taxonomy needs at least 2 clusters.")
        if not self.alphas:
            raise ValueError("alphas is empty: give at least one steering strength, e.g. alphas=(1.0,).")
        for a in self.alphas:  # an infinite strength would record empty completions as accuracy 0
            check_finite("alpha", a)
        for name in ("site", "router_site"):
            if getattr(self, name) is not None:
                check_site_name(getattr(self, name))  # a typo fails here, before any compute; depth fractions allowed
        for t in (*self.thresholds, self.threshold, *self.budgets):
            check_budget(t)  # thresholds are probabilities in [0, 1]; budgets shares of tokens
        bad = set(self.decodings) - {"greedy", "sampled"}
        if bad or not self.decodings:
            raise ValueError(f"decodings must be some of 'greedy', 'sampled'; got {self.decodings}.")

    def key(self) -> str:
        # how vectors are trained does not name the evaluation points (vectors are the run's artifact), so runs made before these settings resume
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("vector_batch_size", "vector_max_tokens")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ artifacts


ROUTER_FILES = ("router.json", "router.safetensors")
SFT_OWNS = ("*.json", "*.safetensors", "*.txt", "*.jinja")


def resolved_sites(pair: ModelPair, cfg: RecoverConfig) -> tuple[str, str]:
    """The base-model site of the vectors and the post-RL site the router reads, checked against the models.

    Depth fractions (``resid_post@0.4``) become layers of the model they name a site of.
    """
    from latentreason.sites import site_in

    site = str(site_in(pair.base_model, cfg.site or pair.defaults.get("site") or "resid_post.1"))
    return site, str(site_in(pair.post_rl_model, cfg.router_site or pair.defaults.get("router_site") or site))


def build_artifacts(pair: ModelPair, out: str | os.PathLike, cfg: RecoverConfig, progress: bool = True, *, force: bool = False) -> dict[str, Any]:
    """Rollouts, cache, categories, vectors and router in ``out``, each a stage (``latentreason.stage``).

    A stage already there with the same config and inputs is reused (or resumed); one made with
    other settings, or from inputs since replaced, is refused with the differing keys named
    (``force=True`` rebuilds it). ``cfg.vectors`` / ``cfg.router`` are copied in, never moved.
    """
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.extract import build_vectors, categories_from
    from latentreason.rollouts import build_rollouts, task_for_pair
    from latentreason.stage import artifact_digest, copy_artifact
    from latentreason.vectors import load_vectors

    rd = RunDir(out).mkdir()
    for what, src in (("vectors", cfg.vectors), ("router", cfg.router)):
        if src is not None and not Path(src).is_dir():
            raise FileNotFoundError(f"--{what} {src}: no such directory.")
    task = task_for_pair(pair, cfg.task, cfg.data) if cfg.data else task_for_pair(pair, cfg.task)
    site, router_site = resolved_sites(pair, cfg)  # a bad site fails here, before rollouts are generated
    build_rollouts(pair, task, rd.rollouts, "train", cfg.n_train, seed=cfg.seed, models=("post_rl",), max_new_tokens=cfg.max_new_tokens, batch_size=min(64, cfg.batch_size), force=force)
    cache_activations(pair, rd.rollouts, rd.activations, sorted({site, router_site}), models=("base", "post_rl"), progress=progress, force=force)
    cache = ActivationCache.open(rd.activations)
    cache.check_model("base", pair.fingerprint("base"))
    cache.check_model("post_rl", pair.fingerprint("post_rl"))

    taxonomy: Any = cfg.taxonomy
    if taxonomy == "auto":  # planted labels where the task has them, else discover strategies with k-means
        taxonomy = "planted" if any(s.get("label") is not None for s in cache.sentences) else "kmeans"
    if taxonomy in ("kmeans", "sae"):
        from latentreason.taxonomy import build_taxonomy, default_ks

        n_sent = len(cache.sentences)
        if cfg.k is None and n_sent < 2:
            raise ValueError(f"The cache holds {n_sent} sentence(s); discovering strategies needs at least 2. Generate more or longer rollouts (--n-train, --max-new-tokens).")
        ks = cfg.k or default_ks(n_sent)  # small runs (few sentences): never sweep more clusters than sentences
        build_taxonomy(rd.activations, rd.taxonomy, site, ks, (taxonomy,), random_state=cfg.seed, force=force)
        taxonomy = rd.taxonomy
    if cfg.vectors is not None:
        src = Path(cfg.vectors)
        names = [*load_vectors(src)]  # hash-checked before anything is copied
        copy_artifact(src, rd.vectors, "vectors", ["index.json", *(f"{n}{ext}" for n in names for ext in (".json", ".safetensors"))], force=force)
    else:
        opt = {"batch_size": cfg.vector_batch_size, "max_tokens": cfg.vector_max_tokens}
        build_vectors(pair, rd.activations, taxonomy, rd.vectors, site, cfg.method, bias=True, seed=cfg.seed, optimize=opt, force=force)
    vectors = load_vectors(rd.vectors)
    elsewhere = sorted({str(v.site) for v in vectors.values()} - {site})
    if elsewhere:
        raise ValueError(f"The vectors in {cfg.vectors or rd.vectors} are at {', '.join(elsewhere)}, but this run steers at {site}. Pass --site {elsewhere[0]}, or give vectors made at {site}.")
    strategy_vectors = [v for name, v in vectors.items() if name != "bias"]
    if not strategy_vectors:
        raise ValueError(f"No strategy vector in {rd.vectors}: no category had enough example sentences in {cfg.n_train} rollouts. Use more or longer rollouts (--n-train, --max-new-tokens) in a fresh --out.")
    cats = categories_from(cache, taxonomy, site)
    names = [v.name for v in strategy_vectors]
    index = {n: i for i, n in enumerate(names)}
    labels = [index.get(cats.names.get(c), NONE) if c is not None else NONE for c in cats.labels]
    X, y = router_training_data(cache, router_site, labels)
    if cfg.router is not None:
        copy_artifact(cfg.router, rd.router, "router", ROUTER_FILES, force=force)
        router = ProbeRouter.load(rd.router)
    else:
        from latentreason.stage import REUSE, open_stage

        rconfig = {"site": router_site, "strategies": names, "C": 1.0, "max_iter": 500, "random_state": cfg.seed, "max_negatives": 20_000}
        rinputs = {"activations": cache.manifest.digest(), "taxonomy": None if taxonomy == "planted" else artifact_digest(taxonomy), "vectors": artifact_digest(rd.vectors)}
        with open_stage(rd.router, "router", rconfig, rinputs, owns=ROUTER_FILES, force=force) as st:
            if st.state == REUSE:
                router = ProbeRouter.load(rd.router)
            else:
                router = ProbeRouter(names, router_site, threshold=cfg.threshold, random_state=cfg.seed).fit(X, y, fingerprint=pair.fingerprint("post_rl"))
                router.save(rd.router)
                st.complete(ROUTER_FILES, models={"post_rl": {"path": pair.post_rl_spec.path, "fingerprint": pair.fingerprint("post_rl")}})
    if router.strategies != names:
        raise ValueError(f"The router in {cfg.router or rd.router} routes to {router.strategies}, but the vectors are {names}; give a router trained for these vectors.")
    router.check_model(router_site, pair.fingerprint("post_rl"))
    router = _with_threshold(router, cfg.threshold)  # the routing threshold is the config's, never the one saved with the router
    if cfg.interventions and getattr(task, "name", "") == "arith" and "single_problem_rl" in pair.extras:
        build_sft(pair, rd, cfg.seed, force=force)
    return {"task": task, "vectors": strategy_vectors, "bias": vectors.get("bias"), "router": router, "router_X": (X, y), "site": site, "router_site": router_site}


def build_sft(pair: ModelPair, rd: RunDir, seed: int, *, force: bool = False) -> Path:
    """The single-problem SFT stage (``RUN/single_problem_sft``): fine-tune the base model on the pair's single RL problem."""
    import shutil

    from latentreason.sft import save_sft_model, single_problem_sft
    from latentreason.stage import REUSE, open_stage

    config = {"seed": seed, "steps": 30, "lr": 1e-4}  # single_problem_sft's defaults; the problem is the pair's (its single-problem RL model)
    inputs = {"fingerprints": {role: pair.fingerprint(role) for role in ("base", "single_problem_rl")}}
    with open_stage(rd.sft, "sft", config, inputs, owns=SFT_OWNS, force=force) as st:
        if st.state == REUSE:
            return rd.sft
        tmp = rd.root / f".{rd.sft.name}.build"  # save_sft_model writes a whole directory: build it aside, then move its files in
        shutil.rmtree(tmp, ignore_errors=True)
        save_sft_model(single_problem_sft(pair, steps=config["steps"], lr=config["lr"], seed=seed), pair.base_tokenizer, tmp)
        names = sorted(f.name for f in tmp.iterdir())
        for n in names:
            os.replace(tmp / n, st.path(n))
        tmp.rmdir()
        st.complete(names, models={"base": {"path": pair.base_spec.path, "fingerprint": pair.fingerprint("base")}})
    return rd.sft


def router_training_data(cache, site: str, sentence_labels: list[int], max_negatives: int = 20_000, seed: int = 0, roles=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RL activations with labels: each sentence's decision token (the token before it)
    gets its strategy index; every other completion token gets -1 ("no new strategy").

    ``sentence_labels`` has one label per sentence of ``cache.sentences``. Only rollouts that
    the models ``roles`` generated are read (default: post-RL only); sentences of other
    rollouts count as unlabelled whatever their label.
    """
    from latentreason.cache import parse_roles

    roles = parse_roles(roles)
    pos = cache.sentence_start_tokens(site, "post_rl")  # [n_sentences, d]
    y_pos = torch.tensor(sentence_labels, dtype=torch.long)
    if pos.shape[0] != len(y_pos):
        raise ValueError(f"{len(y_pos)} sentence labels for {pos.shape[0]} cached sentences.")
    y_pos[torch.tensor([s.get("rollout_model") not in roles for s in cache.sentences], dtype=torch.bool)] = NONE
    cache = cache.generated_by(roles)
    negs = []
    spans_of = {r["id"]: r["tokens"]["post_rl"]["spans"] for r in cache.rollouts}
    for rid, x in cache.iter_rollouts(site, "post_rl"):
        starts = {s for s, _ in spans_of[rid]}
        keep = [j for j in range(x.shape[0]) if (j + 1) not in starts]
        if keep:
            negs.append(x[keep].float())
    neg = torch.cat(negs) if negs else pos.new_zeros((0, pos.shape[1]))
    if neg.shape[0] > max_negatives:
        g = torch.Generator().manual_seed(seed)
        neg = neg[torch.randperm(neg.shape[0], generator=g)[:max_negatives]]
    keep_pos = y_pos != NONE
    X = torch.cat([pos[keep_pos], neg])
    y = torch.cat([y_pos[keep_pos], torch.full((neg.shape[0],), NONE, dtype=torch.long)])
    return X, y


# ------------------------------------------------------------------ evaluation


class FirstStepRouter:
    """Control: the inner router's decisions at the first generated token only."""

    is_oracle = False
    needs_logits = False

    def __init__(self, inner: ProbeRouter) -> None:
        self.inner, self.strategies, self.site = inner, inner.strategies, inner.site

    def predict(self, X, ctx: RouteContext | None = None):
        d = self.inner.predict(X, ctx)
        return d if ctx is not None and ctx.step == 0 else torch.full_like(d, NONE)


def random_like(vectors: list[SteeringVector], seed: int) -> list[SteeringVector]:
    """Norm-matched random directions (one per vector), seeded."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for v in vectors:
        r = torch.randn(v.d_model, generator=g)
        out.append(dataclasses.replace(v, direction=r * (v.norm / float(r.norm())), method="random", provenance={"control": "random", "seed": seed, "matched": v.name}))
    return out


def evaluate_point(pair: ModelPair, prompts: list[str], problems: list, task, vectors, router, alpha: float, decoding: str, cfg: RecoverConfig, force: int | None = None) -> tuple[list[bool], HybridResult]:
    engine = HybridEngine(pair, vectors, router, alpha=alpha, force=force)
    temp = 0.0 if decoding == "greedy" else cfg.temperature
    max_new = cfg.max_new_tokens or int(pair.defaults.get("max_new_tokens", 256))
    res = engine.generate(prompts, max_new_tokens=max_new, temperature=temp, seed=cfg.seed, batch_size=cfg.batch_size)
    return [bool(task.grade(p, c)) for p, c in zip(problems, res.completions)], res


def baseline(pair: ModelPair, task, problems, role: str, decoding: str, cfg: RecoverConfig, model=None) -> dict[str, Any]:
    """Per-problem correctness and completions of one model of the pair (or of ``model``, prompted like the base)."""
    from latentreason.generation import decode, left_pad

    if model is None:
        model, tok = pair.model(role), pair.tokenizer(role)
    else:
        tok, role = pair.base_tokenizer, "base"
    max_new = cfg.max_new_tokens or int(pair.defaults.get("max_new_tokens", 256))
    temp = 0.0 if decoding == "greedy" else cfg.temperature
    completions: list[str] = []
    for i in range(0, len(problems), cfg.batch_size):
        chunk = problems[i : i + cfg.batch_size]
        ids, mask = left_pad([tok(pair.format_prompt(role, task.prompt(p))).input_ids for p in chunk], tok.pad_token_id)
        res = decode(model, ids, mask, max_new_tokens=max_new, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temp, seed=cfg.seed + i)
        completions += res.completions(tok)
    correct = [bool(task.grade(p, c)) for p, c in zip(problems, completions)]
    return {"correct": correct, "examples": [{"problem": task.problem_to_json(p), "completion": c, "steered": []} for p, c in zip(problems, completions)]}


def intervention_models(pair: ModelPair, task, rd: RunDir, cfg: RecoverConfig) -> dict[str, Any]:
    """Cheap interventions to place beside the hybrid: the pair's extra models and, on the organism, a single-problem SFT."""
    models = dict(pair.extras)
    if getattr(task, "name", "") == "arith" and "single_problem_rl" in pair.extras:
        from latentreason.manifest import Manifest
        from latentreason.pair import load_model

        Manifest.read(build_sft(pair, rd, cfg.seed), kind="sft")  # reused when build_artifacts made it; refuses an unfinished one
        models["single_problem_sft"] = load_model(str(rd.sft))
    return models


RECOVERY_OWNS = (RECOVERY_FILE, "recovery_vs_*.png", "recovery_vs_*.svg")


def points_inputs(pair: ModelPair, rd: RunDir, art: dict[str, Any]) -> dict[str, Any]:
    """What the points of a run read: its vectors and router, the pair's models (and the SFT intervention, when there)."""
    from latentreason.stage import artifact_digest

    inputs: dict[str, Any] = {"vectors": artifact_digest(rd.vectors), "router": artifact_digest(rd.router), "fingerprints": {role: pair.fingerprint(role) for role in ("base", "post_rl", *pair.extras)}}
    if (rd.sft / "manifest.json").exists():
        inputs["sft"] = artifact_digest(rd.sft)
    return inputs


def points_dir(run: str | os.PathLike, cfg: RecoverConfig) -> Path:
    """Directory of the point files that ``cfg`` produces in run directory ``run``: the one place that names it."""
    return RunDir(run).points(cfg.key())


def config_of(result: dict[str, Any]) -> RecoverConfig:
    """The :class:`RecoverConfig` that produced a ``recovery.json`` (from its ``config``)."""
    raw = result.get("config")
    if not isinstance(raw, dict):
        raise ValueError(f"recovery.json has no config table (got {type(raw).__name__}); re-run `latentreason recover` to rewrite it.")
    try:
        return RecoverConfig(**raw)
    except TypeError as e:
        raise ValueError(f"recovery.json's config does not match this version's RecoverConfig ({e}); re-run `latentreason recover` with this version.") from e


def result_points_dir(run: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Directory of the point files behind ``result`` (a ``recovery.json``) in ``run``: never another config's."""
    return points_dir(run, config_of(result))


def chosen_point(result: dict[str, Any], decoding: str) -> dict[str, Any] | None:
    """The point chosen on dev for ``decoding`` (``recovery.json``'s ``chosen``), or None for results without one."""
    chosen = result.get("chosen")
    pt = chosen.get(decoding) if isinstance(chosen, dict) else None
    return pt if isinstance(pt, dict) else None


def chosen_point_file(run: str | os.PathLike, result: dict[str, Any], decoding: str = "greedy") -> Path | None:
    """The point file (completions, steered tokens) of the point chosen on dev for ``decoding``; None if there is none.

    Looked up in the points directory of the config that produced ``result``; a ``file`` that
    is not a plain ``*.json`` name (a tampered ``recovery.json``) is never followed.
    """
    chosen = chosen_point(result, decoding)
    name = chosen.get("file") if chosen is not None else None
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".json"):
        return None
    try:
        f = result_points_dir(run, result) / name
    except ValueError:
        return None
    return f if f.is_file() else None


def evaluation_problems(task, cfg: RecoverConfig) -> tuple[list, list]:
    """The dev and test problems of a run, each split's problems distinct and the two splits disjoint.

    Intervals treat problems as independent, so a repeated problem would count twice; a task
    whose sampler repeats problems (or has too few) is refused before anything is computed.
    """
    from latentreason.rollouts import problem_to_json

    dev = task.sample("dev", cfg.n_dev, seed=cfg.seed)
    test = task.sample("test", cfg.n_test, seed=cfg.seed)
    keys = {}
    for split, problems in (("dev", dev), ("test", test)):
        keys[split] = [json.dumps(problem_to_json(task, p), sort_keys=True) for p in problems]
        if len(set(keys[split])) < len(problems):
            raise ValueError(f"Task {getattr(task, 'name', task)!r} returned {len(problems) - len(set(keys[split]))} repeated problem(s) among {len(problems)} {split} problems; its sample() must draw distinct problems (ask for fewer with --n-{split}).")
    if set(keys["dev"]) & set(keys["test"]):
        raise ValueError(f"Task {getattr(task, 'name', task)!r}: {len(set(keys['dev']) & set(keys['test']))} problem(s) are in both the dev and the test split; its splits must not overlap.")
    return dev, test


def chosen_record(pt: dict[str, Any], file: str, dev_score: dict[str, Any]) -> dict[str, Any]:
    """What ``recovery.json`` keeps of the point chosen on dev: enough to identify it and its test result."""
    keep = ("decoding", "router", "alpha", "threshold", "budget", "acc", "recovery", "recovery_ci", "n")
    return {**{k: pt.get(k) for k in keep}, "selected_on": "dev", "dev_acc": dev_score.get("acc"), "file": file}


def run_recovery(pair: ModelPair, out: str | os.PathLike, cfg: RecoverConfig | None = None, progress: bool = True, *, force: bool = False) -> dict[str, Any]:
    """Build artifacts, evaluate every point (resuming), write ``recovery.json`` and plots; returns the result.

    ``out`` is locked for the run. Each config's points live in their own stage directory
    (``RunDir.points(cfg.key())``), resumed point by point; points made from other vectors, router or
    models are refused (``force=True`` recomputes them). ``recovery.json`` and the plots are the run's
    current summary, replaced by each run.

    Per decoding, alpha is chosen on the dev split at the configured router threshold; that
    point is recorded as ``chosen`` and is the one every headline reports. The other test
    points form the curves and are never maximised over.
    """
    from latentreason.rollouts import task_for_pair
    from latentreason.stage import open_run, open_stage

    cfg = cfg or RecoverConfig()
    problems = evaluation_problems(task_for_pair(pair, cfg.task, cfg.data), cfg)  # refused here, before any compute
    with open_run(out) as rd:
        art = build_artifacts(pair, rd.root, cfg, progress, force=force)
        key = cfg.key()
        pconfig = {**dataclasses.asdict(cfg), "site": art["site"], "router_site": art["router_site"]}
        with open_stage(rd.points(key), "points", pconfig, points_inputs(pair, rd, art), owns=("*.json",), force=force) as points:
            with open_stage(rd.recovery, "recovery", {"points": key}, owns=RECOVERY_OWNS, force=True) as summary:  # only ever replaces its own files
                result = _evaluate(pair, rd, cfg, art, key, problems, progress)
                points.complete(sorted(p.name for p in points.directory.glob("*.json") if p.name != "manifest.json"))
                summary.complete(sorted(p.name for pat in RECOVERY_OWNS for p in rd.recovery.glob(pat)))
    return result


def _evaluate(pair: ModelPair, rd: RunDir, cfg: RecoverConfig, art: dict[str, Any], key: str, problems: tuple[list, list], progress: bool) -> dict[str, Any]:
    """Every point of one config (each saved as it finishes; finished ones are read back), then ``recovery.json`` and plots."""
    from latentreason.plots import plot_recovery_vs_alpha, plot_recovery_vs_budget

    task, vectors, bias, router = art["task"], art["vectors"], art["bias"], art["router"]
    write_json(rd.points(key) / "config.json", dataclasses.asdict(cfg))
    dev, test = problems
    dev_prompts, test_prompts = [task.prompt(p) for p in dev], [task.prompt(p) for p in test]

    def cached(name: str, fn) -> dict[str, Any]:
        path = rd.point(key, name)
        if path.exists():
            return read_json(path)
        val = fn()
        write_json(path, val)
        return val

    result: dict[str, Any] = {"pair": pair.name, "task": task.name, "site": art["site"], "router_site": art["router_site"], "strategies": router.strategies, "n": cfg.n_test, "config": dataclasses.asdict(cfg), "decodings": {}, "chosen": {}, "points": []}
    bar = tqdm(desc="recovery points", disable=not progress)
    for decoding in cfg.decodings:
        base_c = cached(f"base_{decoding}", lambda: baseline(pair, task, test, "base", decoding, cfg))["correct"]
        post_c = cached(f"post_rl_{decoding}", lambda: baseline(pair, task, test, "post_rl", decoding, cfg))["correct"]
        base_acc, post_acc = sum(base_c) / len(base_c), sum(post_c) / len(post_c)
        result["decodings"][decoding] = {"base_acc": base_acc, "post_rl_acc": post_acc, "base_acc_ci": bootstrap_mean(base_c, cfg.n_boot, cfg.seed)[1], "post_rl_acc_ci": bootstrap_mean(post_c, cfg.n_boot, cfg.seed)[1]}

        def point(name: str, *, vecs, rtr, alpha: float, control: str | None, router_name: str, is_oracle: bool = False, force: int | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            def compute() -> dict[str, Any]:
                correct, res = evaluate_point(pair, test_prompts, test, task, vecs, rtr, alpha, decoding, cfg, force)
                examples = [{"problem": task.problem_to_json(p), "completion": c, "steered": res.steered(i)} for i, (p, c) in enumerate(zip(test, res.completions))]
                for i, e in enumerate(examples[:8]):  # token texts, so reports can highlight steered tokens exactly
                    e["pieces"] = res.pieces(i, pair.base_tokenizer)
                return {"correct": correct, "budget": res.budget, "examples": examples}

            rec = cached(f"{decoding}_{name}", compute)
            bar.update()
            r, ci = bootstrap_recovery(base_c, post_c, rec["correct"], cfg.n_boot, cfg.seed)
            pt = {"router": router_name, "is_oracle": is_oracle, "control": control, "alpha": alpha, "budget": rec["budget"], "acc": sum(rec["correct"]) / len(rec["correct"]), "recovery": r, "recovery_ci": list(ci), "n": len(rec["correct"]), "decoding": decoding, **(extra or {})}
            result["points"].append(pt)
            return pt

        # alpha chosen on the dev split under this decoding (probe router at the default threshold)
        def dev_scores() -> dict[str, Any]:
            scores = {}
            for a in cfg.alphas:
                c, res = evaluate_point(pair, dev_prompts, dev, task, vectors, router, a, decoding, cfg)
                scores[str(a)] = {"acc": sum(c) / len(c), "budget": res.budget}
            return scores

        scores = cached(f"dev_alpha_{decoding}", dev_scores)
        best = max(cfg.alphas, key=lambda a: (round(scores[str(a)]["acc"], 6), -a))
        result["decodings"][decoding].update({"chosen_alpha": best, "dev_scores": scores})
        curve = {a: point(f"probe_a{a}_t{cfg.threshold}", vecs=vectors, rtr=router, alpha=a, control=None, router_name="probe", extra={"threshold": cfg.threshold}) for a in cfg.alphas}
        curve[best]["chosen"] = True  # chosen on dev; the other alphas only draw the curve
        result["chosen"][decoding] = chosen_record(curve[best], f"{decoding}_probe_a{best}_t{cfg.threshold}.json", scores[str(best)])
        thresholds = list(cfg.thresholds)
        if cfg.budgets:
            X, _ = art["router_X"]
            thresholds = [router.threshold_for_budget(X, b) for b in cfg.budgets]
        for t in thresholds:
            if t != cfg.threshold:
                point(f"probe_a{best}_t{t}", vecs=vectors, rtr=_with_threshold(router, t), alpha=best, control=None, router_name="probe", extra={"threshold": t})
        if cfg.oracle:
            point(f"oracle_a{best}", vecs=vectors, rtr=OracleRouter(router), alpha=best, control=None, router_name="oracle", is_oracle=True)
        if cfg.interventions:
            models = intervention_models(pair, task, rd, cfg)
            if not models:
                result["interventions_skipped"] = f"pair {pair.name!r} has no extra models (such as single_problem_rl) to place beside the hybrid; load an organism pair directory (--pair organism) or a preset naming one to get them."
                log.warning("no interventions placed: %s", result["interventions_skipped"])
            for name, model in models.items():
                rec = cached(f"{decoding}_intervention_{name}", lambda m=model: baseline(pair, task, test, name, decoding, cfg, model=m))
                r, ci = bootstrap_recovery(base_c, post_c, rec["correct"], cfg.n_boot, cfg.seed)
                result.setdefault("interventions", []).append(
                    {"name": name, "label": f"{name} (weights changed, no steering)", "decoding": decoding, "budget": 0.0, "acc": sum(rec["correct"]) / len(rec["correct"]), "recovery": r, "recovery_ci": list(ci), "n": len(rec["correct"])}
                )
        if not cfg.controls:
            continue
        main_budget = curve[best]["budget"]
        for s in range(cfg.random_seeds):
            for a in [a for a in cfg.alphas if a <= best]:
                point(f"random_s{s}_a{a}", vecs=random_like(vectors, 1000 + s), rtr=router, alpha=a, control="random_vectors", router_name="probe", extra={"seed": s})
        for s in range(min(3, cfg.random_seeds)):
            point(f"timing_s{s}_a{best}", vecs=vectors, rtr=RandomTimingRouter(router, main_budget, seed=s), alpha=best, control="random_timing", router_name="probe", extra={"seed": s})
        if bias is not None:
            point(f"bias_a{best}", vecs=[bias] * len(vectors), rtr=router, alpha=best, control="bias_only", router_name="probe")
        point(f"every_a{best}", vecs=vectors, rtr=_with_threshold(router, 0.0), alpha=best, control="every_token", router_name="probe")
        if len(vectors) > 1:
            swapped = vectors[1:] + vectors[:1]
            point(f"swapped_a{best}", vecs=swapped, rtr=router, alpha=best, control="swapped", router_name="probe")
        point(f"first_a{best}", vecs=vectors, rtr=FirstStepRouter(router), alpha=best, control="first_sentence_only", router_name="probe")
    bar.close()
    first = cfg.decodings[0]
    result["base_acc"] = result["decodings"][first]["base_acc"]
    result["post_rl_acc"] = result["decodings"][first]["post_rl_acc"]
    write_json(rd.recovery / RECOVERY_FILE, result)
    for decoding in cfg.decodings:
        sub = {**result, **result["decodings"][decoding]}
        suffix = "" if decoding == first else f"_{decoding}"
        extra = [p for p in result.get("interventions", []) if p["decoding"] == decoding]
        plot_recovery_vs_budget(sub, rd.recovery / f"recovery_vs_budget{suffix}.png", decoding, extra_points=extra)
        plot_recovery_vs_alpha(sub, rd.recovery / f"recovery_vs_alpha{suffix}.png", decoding)
    return result


def _with_threshold(router: ProbeRouter, t: float) -> ProbeRouter:
    """The same fitted probe with another threshold (learned tensors shared, not copied)."""
    r = copy.copy(router)
    r.threshold = t
    return r
