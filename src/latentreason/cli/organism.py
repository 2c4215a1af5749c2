"""``latentreason organism``: train and evaluate the built-in model organism."""

from __future__ import annotations

import click


@click.group()
def organism() -> None:
    """Train or evaluate the built-in model organism (a tiny base / post-RL pair)."""


@organism.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory to write the pair into.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML file overriding the default config.")
@click.option("--rl-problems", type=int, default=None, help="Run RL on only this many training problems (1 = single-problem RL).")
@click.option("--no-single-problem", is_flag=True, help="Skip the extra single-problem RL model.")
def train(out: str, seed: int, config_path: str | None, rl_problems: int | None, no_single_problem: bool) -> None:
    """Pretrain the base model, then RL it into the post-RL model (resumes if interrupted)."""
    from latentreason.organism.train import OrganismConfig, train_organism

    from latentreason.validate import check_out_dir

    try:
        check_out_dir(out)
        cfg = OrganismConfig.from_toml(config_path) if config_path else OrganismConfig()
        path = train_organism(out, cfg, seed=seed, rl_problems=rl_problems, single_problem=not no_single_problem)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"organism pair written to {path}")


@organism.command("eval")
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism' or an organism pair directory.")
@click.option("--n", default=600, show_default=True, type=int, help="Number of held-out problems.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "dev", "test"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--details", is_flag=True, help="Include per-model greedy/sampled details in the JSON.")
def eval_(pair_spec: str, n: int, split: str, seed: int, as_json: bool, details: bool) -> None:
    """Accuracy, reasoning rate and strategy use of the pair, greedy and sampled (T=1)."""
    from latentreason.organism.evaluate import evaluate_pair
    from latentreason.pair import load_pair

    if n <= 0:
        raise click.BadParameter(f"--n={n} must be positive.")
    try:
        pair = load_pair(pair_spec)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    res = evaluate_pair(pair, n=n, split=split, seed=seed)
    if not details:
        res.pop("details")
    if as_json:
        from latentreason.io import dumps_json

        click.echo(dumps_json(res))
        return
    for k, v in res.items():
        click.echo(f"{k:32s} {v if not isinstance(v, float) else f'{v:.3f}'}")
