"""``latentreason demo``: the whole pipeline on the built-in organism, ending in an HTML report."""

from __future__ import annotations

import time

import click


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--fresh", is_flag=True, help="Delete the run directory first instead of reusing its artifacts.")
def demo(out: str, fresh: bool) -> None:
    """Rollouts, cache, taxonomy, vectors, router, hybrid with controls, quality and report on the shipped organism."""
    import shutil

    from latentreason.demo import run_demo
    from latentreason.io import read_json
    from latentreason.report import best_point
    from latentreason.rundir import RunDir
    from latentreason.validate import check_out_dir

    try:
        check_out_dir(out)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    try:
        path = run_demo(out)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    rd = RunDir(out)
    result = read_json(rd.recovery / "recovery.json")
    g = result["decodings"]["greedy"]
    click.echo(f"base accuracy {g['base_acc']:.3f}, post-RL {g['post_rl_acc']:.3f} on {result['n']} held-out problems (greedy)")
    best = best_point(result)
    if best:
        click.echo(f"probe router (honest): recovery {best['recovery']:.2f} [{best['recovery_ci'][0]:.2f}, {best['recovery_ci'][1]:.2f}] steering {100 * best['budget']:.1f}% of tokens (alpha {best['alpha']})")
    for p in result["points"]:
        if p["decoding"] == "greedy" and p["control"] and best and p["alpha"] == best["alpha"] and p.get("seed", 0) == 0:
            click.echo(f"  control {p['control']:20s} recovery {p['recovery'] if p['recovery'] is not None else float('nan'):.2f} at budget {100 * p['budget']:.1f}%")
    click.echo(f"report: {path}  ({time.time() - t0:.0f} s)")
