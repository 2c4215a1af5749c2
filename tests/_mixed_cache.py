"""A cache of the organism on rollouts from BOTH models, as `rollouts --models post_rl,base` makes.

The post-RL rollouts are worked solutions (steps, checks, corrections: several sentences
each); the base rollouts are direct answers ("A:7"), so a sentence's source shows in its
planted label. Shared by the tests of the cache view, the taxonomy, extraction and the router.
"""

from __future__ import annotations

from pathlib import Path

SITE = "resid_post.1"
N_POST, N_BASE = 24, 16


def make_mixed_cache(organism, run: Path):
    """Cache ``run/activations`` of ``N_POST`` post-RL and ``N_BASE`` base rollouts, interleaved."""
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.organism.corpus import CorpusConfig, make_corpus
    from latentreason.rollouts import make_row, task_for_pair, write_rollouts

    task = task_for_pair(organism)
    worked = make_corpus(task, N_POST, CorpusConfig(worked_fraction=1.0, switch_continue=1.0), seed=0)
    direct = make_corpus(task, N_BASE, CorpusConfig(worked_fraction=0.0), seed=1)
    rows = []
    for i, e in enumerate(worked):
        rows.append(make_row(task, rollout_id=f"p{i:03d}", model="post_rl", split="train", index=i, problem=e.problem, completion=e.completion))
        if i < len(direct):
            d = direct[i]
            rows.append(make_row(task, rollout_id=f"b{i:03d}", model="base", split="train", index=i, problem=d.problem, completion=d.completion))
    write_rollouts(run / "rollouts", rows, organism, task, {"synthetic": True, "models": ["post_rl", "base"]})
    return ActivationCache.open(cache_activations(organism, run, run / "activations", [SITE], progress=False))
