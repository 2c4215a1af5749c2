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

    from latentreason.cli.recover import _f
    from latentreason.demo import run_demo
    from latentreason.io import read_json
    from latentreason.rundir import RunDir

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
    click.echo(f"base accuracy {g['base_acc']:.3f}, post-RL {g['post_rl_acc']:.3f} on {result['n']} distinct held-out problems (greedy)")
    chosen = result["chosen"]["greedy"]
    click.echo(f"probe router (honest), alpha {chosen['alpha']:g} and threshold {chosen['threshold']:g} chosen on dev: recovery {_f(chosen['recovery'])} [{_f(chosen['recovery_ci'][0])}, {_f(chosen['recovery_ci'][1])}] steering {100 * chosen['budget']:.1f}% of tokens")
    for p in result["points"]:
        if p["decoding"] == "greedy" and p["control"] and p["alpha"] == chosen["alpha"] and p.get("seed", 0) == 0:
            click.echo(f"  control {p['control']:20s} recovery {_f(p['recovery'])} at budget {100 * p['budget']:.1f}%")
    click.echo(f"report: {path}  ({time.time() - t0:.0f} s)")
