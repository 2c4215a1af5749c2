"""``latentreason rollouts``: generate graded, segmented rollouts into RUN/rollouts."""

from __future__ import annotations

import click


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism pair directory or a preset .toml.")
@click.option("--task", "task", default=None, help="Task name (default: the pair's task).")
@click.option("--data", default=None, type=click.Path(exists=True), help="Local file or directory of a real dataset (gsm8k, math500); default: load through `datasets`.")
@click.option("--split", default="train", show_default=True)
@click.option("--n", default=256, show_default=True, type=int, help="Number of problems.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory; writes RUN/rollouts/.")
@click.option("--models", default="post_rl", show_default=True, help="Comma-separated model roles that generate (e.g. post_rl,base).")
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--max-new-tokens", default=None, type=int, help="Default: the pair's, else the task's, else 512.")
@click.option("--force", is_flag=True, help="Replace rollouts made with other settings in RUN/rollouts (only their files).")
def rollouts(pair_spec: str, task: str | None, data: str | None, split: str, n: int, out: str, models: str, temperature: float, seed: int, batch_size: int, max_new_tokens: int | None, force: bool) -> None:
    """Generate rollouts of the pair's models on a task split (RUN/rollouts/rollouts.jsonl + manifest.json).

    Rollouts with the same settings already in RUN are reused; other settings are refused (--force replaces them).
    """
    from latentreason.pair import default_device, load_pair
    from latentreason.rollouts import build_rollouts, check_rollout_args, read_rollouts, task_for_pair
    from latentreason.stage import open_run
    from latentreason.validate import check_out_dir, check_roles

    roles = [m.strip() for m in models.split(",") if m.strip()]
    try:
        check_rollout_args(n, batch_size, max_new_tokens, temperature)  # every argument, before any model loads
        check_roles(pair_spec, roles)
        check_out_dir(out)
        pair = load_pair(pair_spec, device=default_device())
        task_obj = task_for_pair(pair, task, data=data)
        with open_run(out) as rd:
            d, reused = build_rollouts(pair, task_obj, rd.rollouts, split, n, seed=seed, models=roles, temperature=temperature, batch_size=batch_size, max_new_tokens=max_new_tokens, force=force)
        rows = read_rollouts(d)[1]
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if reused:
        click.echo(f"{d} already holds these rollouts (same settings and models): reused")
    for role in roles:
        mine = [r for r in rows if r["model"] == role]
        click.echo(f"{role}: {len(mine)} rollouts, accuracy {sum(r['correct'] for r in mine) / len(mine):.3f}")
    click.echo(f"rollouts written to {d}")
