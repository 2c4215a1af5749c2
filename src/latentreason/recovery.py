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

    def __post_init__(self) -> None:
        from latentreason.extract import check_batching
        from latentreason.sites import check_site_name

        for name in ("n_train", "n_dev", "n_test", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive.")
        if self.n_train < 2:  # every run trains the bias vector, whose held-out split needs two rollouts
            raise ValueError(f"--n-train {self.n_train} (n_train): the bias and optimised vectors hold out whole rollouts to stop training, so they need at least 2 training rollouts; pass --n-train 2 or more.")
        try:
            check_batching(self.vector_batch_size, self.vector_max_tokens)
        except ValueError as e:
            raise ValueError(f"{e} (On the command line: --vector-batch-size / --vector-max-tokens.)") from None
        for name in ("site", "router_site"):
            if getattr(self, name) is not None:
                check_site_name(getattr(self, name))  # a typo fails here, before any compute
        for a in self.alphas:
            if not isinstance(a, (int, float)) or a != a:
                raise ValueError(f"alpha {a!r} is not a number.")
        for t in (*self.thresholds, self.threshold):
            check_budget(t)  # thresholds are probabilities in [0, 1]
        bad = set(self.decodings) - {"greedy", "sampled"}
        if bad or not self.decodings:
            raise ValueError(f"decodings must be some of 'greedy', 'sampled'; got {self.decodings}.")

    def key(self) -> str:
        # how vectors are trained does not name the evaluation points (vectors are the run's artifact), so runs made before these settings resume
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("vector_batch_size", "vector_max_tokens")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ artifacts


def build_artifacts(pair: ModelPair, out: str | os.PathLike, cfg: RecoverConfig, progress: bool = True) -> dict[str, Any]:
    """Rollouts, cache, categories, vectors and router in ``out``; reuses those already there."""
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.extract import categories_from, extract_vectors, write_vectors
    from latentreason.rollouts import ROLLOUTS_FILE, generate_rollouts, task_for_pair, write_rollouts
    from latentreason.sites import site_in
    from latentreason.vectors import load_vectors

    rd = RunDir(out).mkdir()
    task = task_for_pair(pair, cfg.task, cfg.data) if cfg.data else task_for_pair(pair, cfg.task)
    site = str(site_in(pair.base_model, cfg.site or pair.defaults.get("site") or "resid_post.1"))  # depth fractions (resid_post@0.4) become layers here
    router_site = str(site_in(pair.post_rl_model, cfg.router_site or pair.defaults.get("router_site") or site))
    if not (rd.rollouts / ROLLOUTS_FILE).exists():
        rows = generate_rollouts(pair, task, "train", cfg.n_train, seed=cfg.seed, models=("post_rl",), max_new_tokens=cfg.max_new_tokens, batch_size=min(64, cfg.batch_size))
        write_rollouts(rd.rollouts, rows, pair, task)
    sites = sorted({site, router_site})
    if not (rd.activations / "manifest.json").exists():
        cache_activations(pair, rd.rollouts, rd.activations, sites, models=("base", "post_rl"), progress=progress)
    cache = ActivationCache.open(rd.activations)
    cache.check_model("base", pair.fingerprint("base"))
    cache.check_model("post_rl", pair.fingerprint("post_rl"))

    taxonomy: Any = cfg.taxonomy
    if taxonomy == "auto":  # planted labels where the task has them, else discover strategies with k-means
        taxonomy = "planted" if any(s.get("label") is not None for s in cache.sentences) else "kmeans"
    if taxonomy in ("kmeans", "sae"):
        from latentreason.taxonomy import default_ks, fit_from_cache, write_taxonomy

        if not (rd.taxonomy / "manifest.json").exists():
            n_sent = len(cache.sentences)
            if cfg.k is None and n_sent < 2:
                raise ValueError(f"The cache holds {n_sent} sentence(s); discovering strategies needs at least 2. Generate more or longer rollouts (--n-train, --max-new-tokens).")
            ks = cfg.k or default_ks(n_sent)  # small runs (few sentences): never sweep more clusters than sentences
            est, metrics, rows = fit_from_cache(cache, site, ks, (taxonomy,), random_state=cfg.seed)
            write_taxonomy(rd.taxonomy, est, cache, metrics, rows, cache_dir=rd.activations)
        taxonomy = rd.taxonomy
    if not (rd.vectors / "manifest.json").exists():
        opt = {"batch_size": cfg.vector_batch_size, "max_tokens": cfg.vector_max_tokens}
        vecs = extract_vectors(pair, cache, taxonomy, site, cfg.method, bias=True, seed=cfg.seed, optimize=opt)
        write_vectors(rd.vectors, vecs, config={"method": cfg.method, "site": site, "taxonomy": str(taxonomy), **opt}, base_path=pair.base_spec.path, cache_dir=rd.activations)
    vectors = load_vectors(rd.vectors)
    strategy_vectors = [v for name, v in vectors.items() if name != "bias"]
    if not strategy_vectors:
        raise ValueError(f"No strategy vector in {rd.vectors}: no category had enough example sentences in {cfg.n_train} rollouts. Use more or longer rollouts (--n-train, --max-new-tokens) in a fresh --out.")
    cats = categories_from(cache, taxonomy, site)
    names = [v.name for v in strategy_vectors]
    index = {n: i for i, n in enumerate(names)}
    labels = [index.get(cats.names.get(c), NONE) if c is not None else NONE for c in cats.labels]
    X, y = router_training_data(cache, router_site, labels)
    if (rd.router / "router.json").exists():
        router = ProbeRouter.load(rd.router)
        if router.strategies != names:
            raise ValueError(f"The router in {rd.router} routes to {router.strategies}, but the vectors are {names}; delete one of them and re-run.")
        router.check_model(router_site, pair.fingerprint("post_rl"))
    else:
        router = ProbeRouter(names, router_site, threshold=cfg.threshold, random_state=cfg.seed).fit(X, y, fingerprint=pair.fingerprint("post_rl"))
        router.save(rd.router)
    return {"task": task, "vectors": strategy_vectors, "bias": vectors.get("bias"), "router": router, "router_X": (X, y), "site": site, "router_site": router_site}


def router_training_data(cache, site: str, sentence_labels: list[int], max_negatives: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-RL activations with labels: each sentence's decision token (the token before it)
    gets its strategy index; every other completion token gets -1 ("no new strategy")."""
    pos = cache.sentence_start_tokens(site, "post_rl")  # [n_sentences, d]
    y_pos = torch.tensor(sentence_labels, dtype=torch.long)
    if pos.shape[0] != len(y_pos):
        raise ValueError(f"{len(y_pos)} sentence labels for {pos.shape[0]} cached sentences.")
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
        from latentreason.pair import load_model
        from latentreason.sft import save_sft_model, single_problem_sft

        sft_dir = rd.root / "single_problem_sft"
        if not (sft_dir / "config.json").exists():
            save_sft_model(single_problem_sft(pair, seed=cfg.seed), pair.base_tokenizer, sft_dir)
        models["single_problem_sft"] = load_model(str(sft_dir))
    return models


def run_recovery(pair: ModelPair, out: str | os.PathLike, cfg: RecoverConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Build artifacts, evaluate every point (resuming), write ``recovery.json`` and plots; returns the result."""
    from latentreason.plots import plot_recovery_vs_alpha, plot_recovery_vs_budget

    cfg = cfg or RecoverConfig()
    rd = RunDir(out).mkdir()
    art = build_artifacts(pair, out, cfg, progress)
    task, vectors, bias, router = art["task"], art["vectors"], art["bias"], art["router"]
    pdir = rd.recovery / "points" / cfg.key()
    pdir.mkdir(parents=True, exist_ok=True)
    write_json(pdir / "config.json", dataclasses.asdict(cfg))
    dev = task.sample("dev", cfg.n_dev, seed=cfg.seed)
    test = task.sample("test", cfg.n_test, seed=cfg.seed)
    dev_prompts, test_prompts = [task.prompt(p) for p in dev], [task.prompt(p) for p in test]

    def cached(name: str, fn) -> dict[str, Any]:
        path = pdir / f"{name}.json"
        if path.exists():
            return read_json(path)
        val = fn()
        write_json(path, val)
        return val

    result: dict[str, Any] = {"pair": pair.name, "task": task.name, "site": art["site"], "router_site": art["router_site"], "strategies": router.strategies, "n": cfg.n_test, "config": dataclasses.asdict(cfg), "decodings": {}, "points": []}
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
        for a in cfg.alphas:
            point(f"probe_a{a}_t{cfg.threshold}", vecs=vectors, rtr=router, alpha=a, control=None, router_name="probe", extra={"threshold": cfg.threshold})
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
            for name, model in intervention_models(pair, task, rd, cfg).items():
                rec = cached(f"{decoding}_intervention_{name}", lambda m=model: baseline(pair, task, test, name, decoding, cfg, model=m))
                r, ci = bootstrap_recovery(base_c, post_c, rec["correct"], cfg.n_boot, cfg.seed)
                result.setdefault("interventions", []).append(
                    {"name": name, "label": f"{name} (weights changed, no steering)", "decoding": decoding, "budget": 0.0, "acc": sum(rec["correct"]) / len(rec["correct"]), "recovery": r, "recovery_ci": list(ci), "n": len(rec["correct"])}
                )
        if not cfg.controls:
            continue
        main_budget = next(p["budget"] for p in result["points"] if p["decoding"] == decoding and p["control"] is None and p["alpha"] == best and p.get("threshold") == cfg.threshold)
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
