"""``latentreason demo``: the whole pipeline on the shipped organism, on a small split, with a report.

rollouts → cache → taxonomy (k-means, checked against the planted strategies) → vectors →
probe router → hybrid with controls and the oracle → single-problem RL and SFT points →
reasoning quality → ``report.html``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from latentreason.recovery import RecoverConfig, chosen_point_file, run_recovery
from latentreason.rundir import RunDir

log = logging.getLogger(__name__)

DEMO_CONFIG = RecoverConfig(
    n_train=150, n_dev=60, n_test=150, taxonomy="kmeans", k=None, alphas=(0.5, 1.0, 2.0), thresholds=(0.8, 0.5, 0.1),
    random_seeds=3, decodings=("greedy",), max_new_tokens=128,
)


def run_demo(out: str | os.PathLike = "runs/demo", cfg: RecoverConfig = DEMO_CONFIG, progress: bool = True) -> Path:
    """Run the demo into ``out``; returns the report's path. Artifacts already in ``out`` are reused."""
    from latentreason.organism import load_default
    from latentreason.quality import build_generators, quality_report, write_quality
    from latentreason.report import build_report

    t0 = time.time()
    pair = load_default()
    rd = RunDir(out).mkdir()
    result = run_recovery(pair, rd.root, cfg, progress=progress)
    from latentreason.tasks.arith import ArithTask

    task = ArithTask()
    problems = task.sample("test", cfg.n_test, seed=cfg.seed)
    specs = ["base", "post_rl", "forced", "single_problem_rl"]
    sft_dir = rd.root / "single_problem_sft"  # trained once by the recovery stage, reused here
    specs.append(f"model:{sft_dir}" if (sft_dir / "config.json").exists() else "sft")
    generators, _ = build_generators(pair, specs, task, problems, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    point = chosen_point_file(rd.root, result, "greedy")
    if point is not None:  # the hybrid at the point chosen on dev, from this config's points directory
        from latentreason.io import read_json

        rec = read_json(point)
        by_expr = {task.problem_to_json(p): p for p in problems}
        generators["hybrid"] = [(by_expr[e["problem"]], e["completion"]) for e in rec["examples"] if e["problem"] in by_expr]
    write_quality(rd.quality, quality_report(pair, generators, task=task, seed=cfg.seed))
    path = build_report(rd.root)
    log.info("demo finished in %.0f s", time.time() - t0)
    return path
