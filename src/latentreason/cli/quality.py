"""``latentreason quality``: reasoning-quality measures (early answering, filler, information gain) per generator."""

from __future__ import annotations

import click


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism pair directory or a preset .toml.")
@click.option("--generator", "generators", default="base,post_rl,forced,single_problem_rl", show_default=True,
              help="Comma-separated generators: pair roles (base, post_rl, single_problem_rl, ...), forced, sft, model:DIR, hybrid:RUN.")
@click.option("--n", default=300, show_default=True, type=int, help="Number of problems.")
@click.option("--split", default="test", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory; writes RUN/quality/ (quality.json, records.jsonl, plots).")
@click.option("--scorer", default="post_rl", show_default=True, help="Model role that reads the forced answers.")
@click.option("--task", default=None, help="Task (default: the pair's).")
@click.option("--data", default=None, type=click.Path(exists=True), help="Local dataset file for real tasks.")
@click.option("--fractions", default="0,0.2,0.4,0.6,0.8,1", show_default=True, help="Early-answering cuts, from 0 to 1.")
@click.option("--filler", default=".", show_default=True, help="Filler character that replaces the reasoning.")
@click.option("--sft-steps", default=30, show_default=True, type=int, help="Steps of the 'sft' generator.")
@click.option("--sft-lr", default=1e-4, show_default=True, type=float, help="Learning rate of the 'sft' generator.")
@click.option("--sft-out", default=None, type=click.Path(file_okay=False), help="Also save the 'sft' generator's model here.")
@click.option("--max-new-tokens", default=None, type=int)
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print quality.json.")
@click.option("--force", is_flag=True, help="Replace a quality artifact made with other settings in RUN/quality (only its files).")
def quality(pair_spec, generators, n, split, out, scorer, task, data, fractions, filler, sft_steps, sft_lr, sft_out, max_new_tokens, batch_size, seed, as_json, force) -> None:
    """Generate greedy completions of each generator on N problems and score their reasoning with the scorer model."""
    import os

    import torch

    from latentreason.pair import default_device, load_pair
    from latentreason.quality import build_generators, quality_report, write_quality
    from latentreason.rollouts import task_for_pair
    from latentreason.rundir import RunDir
    from latentreason.stage import open_run
    from latentreason.validate import check_finite, check_out_dir, check_positive

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    try:
        try:
            fr = tuple(float(x) for x in fractions.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--fractions {fractions!r} is not a comma-separated list of numbers, e.g. 0,0.5,1.") from None
        if n <= 0:
            raise ValueError(f"--n {n}: ask for at least one problem.")
        for x in fr:
            check_finite("--fractions", x, low=0.0, high=1.0)
        for name, value in (("--batch-size", batch_size), ("--sft-steps", sft_steps)):
            check_positive(name, value)
        if max_new_tokens is not None:
            check_positive("--max-new-tokens", max_new_tokens)
        check_finite("--sft-lr", sft_lr, low=0.0, low_open=True)
        check_out_dir(out)
        if sft_out:
            check_out_dir(sft_out, "--sft-out")
        pair = load_pair(pair_spec, device=default_device())
        task_obj = task_for_pair(pair, task, data=data)
        problems = task_obj.sample(split, n, seed=seed)
        gens, models = build_generators(pair, generators.split(","), task_obj, problems, max_new_tokens=max_new_tokens, batch_size=batch_size, sft_steps=sft_steps, sft_lr=sft_lr, seed=seed)
        if sft_out:
            if "sft" not in models:
                raise ValueError("--sft-out saves the 'sft' generator's model; add sft to --generator.")
            from latentreason.sft import save_sft_model

            save_sft_model(models["sft"], pair.base_tokenizer, sft_out)
        report = quality_report(pair, gens, scorer, task=task_obj, fractions=fr, filler=filler, batch_size=batch_size, seed=seed)
        report["config"] = {"pair": pair_spec, "generators": list(gens), "n": n, "split": split, "seed": seed, "sft_steps": sft_steps, "sft_lr": sft_lr}
        d = RunDir(out).quality
        with open_run(out):
            write_quality(d, report, force=force)
    except (ValueError, FileNotFoundError, TypeError, NotImplementedError) as e:
        raise click.ClickException(str(e)) from e
    summary = {k: v for k, v in report.items() if k != "records"}
    if as_json:
        from latentreason.io import dumps_json

        click.echo(dumps_json(summary, default=str))
        return
    click.echo(f"quality written to {d}")
    click.echo(f"{'generator':22s} {'n':>4s} {'acc':>6s} {'reason':>6s} {'AOC':>6s} {'EA@0':>6s} {'EA@1':>6s} {'filler':>6s} {'gain/step':>9s}")
    def f(x, w: int = 6) -> str:
        return f"{x:{w}.3f}" if x is not None else f"{'-':>{w}s}"

    for name, g in summary["generators"].items():
        ea, fl, ig = g["early_answering"], g["filler"], g["info_gain"]
        click.echo(f"{name:22s} {g['n']:4d} {f(g['acc'])} {f(g['reasoning_rate'])} {f(ea['aoc'])} {f(ea['curve'][0])} {f(ea['curve'][-1])} {f(fl['acc'])} {f(ig['per_step'], 9)}")
