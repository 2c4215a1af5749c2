"""``latentreason run CONFIG.toml``: every stage of the pipeline from one config file."""

from __future__ import annotations

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run directory (default: the file's `out`).")
@click.option("--force", is_flag=True, help="Rebuild artifacts made with other settings or from other inputs (only their files) instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Print recovery.json.")
def run(config: str, out: str | None, force: bool, as_json: bool) -> None:
    """Run rollouts, cache, taxonomy, vectors, router, recovery points, quality and report as CONFIG says.

    Stages already in the run with the same settings are reused, interrupted ones resume, and
    ones made otherwise are refused with the differing settings named. See examples/organism.toml.
    """
    from latentreason.io import dumps_json

    from latentreason.pipeline import RunConfig, run_pipeline
    from latentreason.rundir import RunDir

    try:
        cfg = RunConfig.from_toml(config)
        result = run_pipeline(cfg, out, force=force)
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(dumps_json(result))
        return
    rd = RunDir(out if out is not None else cfg.out)
    click.echo(f"recovery written to {rd.recovery_file}")
    for d, info in result["decodings"].items():
        click.echo(f"[{d}] base {info['base_acc']:.3f}  post-RL {info['post_rl_acc']:.3f}  chosen alpha {info.get('chosen_alpha')}")
    if cfg.quality.enabled:
        click.echo(f"quality written to {rd.quality}")
    if cfg.report.enabled:
        click.echo(f"report: {rd.report}")
