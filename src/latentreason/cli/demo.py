"""``latentreason demo``: the whole pipeline on the built-in organism, ending in an HTML report."""

from __future__ import annotations

import time

import click


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--fresh", is_flag=True, help="Remove the run's artifacts first instead of reusing them (only files its stages wrote; a folder that is not a latentreason run is refused).")
def demo(out: str, fresh: bool) -> None:
    """Rollouts, cache, taxonomy, vectors, router, hybrid with controls, quality and report on the shipped organism."""
    from latentreason.cli.recover import _f
    from latentreason.demo import run_demo
    from latentreason.io import read_json
    from latentreason.rundir import RunDir
    from latentreason.stage import claim_run_file, open_run, record_run_file
    from latentreason.validate import check_out_dir

    try:
        check_out_dir(out)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    t0 = time.time()
    try:
        with open_run(out, fresh=fresh) as rd:
            claim_run_file(rd.root, rd.report.name)
            path = run_demo(out)
            record_run_file(rd.root, rd.report.name)
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
