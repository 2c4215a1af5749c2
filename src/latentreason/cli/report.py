"""``latentreason report RUN``: a self-contained HTML report of a run directory."""

from __future__ import annotations

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--rollouts", "per_generator", default=3, show_default=True, type=int, help="Rollouts shown per generator.")
def report(run: str, per_generator: int) -> None:
    """Write RUN/report.html (figures inlined; opens without a network)."""
    from latentreason.report import build_report
    from latentreason.stage import claim_run_file, open_run, record_run_file
    from latentreason.validate import check_out_dir, check_positive

    try:
        check_positive("--rollouts", per_generator)
        check_out_dir(run, "RUN")
        with open_run(run) as rd:
            claim_run_file(rd.root, rd.report.name)  # a report.html the run did not write is never overwritten
            path = build_report(run, per_generator)
            record_run_file(rd.root, rd.report.name)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"report written to {path}")
