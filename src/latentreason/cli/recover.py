"""``latentreason recover``: recovery-versus-full-RL curves with controls."""

from __future__ import annotations

import click


def _f(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{s!r} is not a comma-separated list of numbers.") from None


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism directory, a preset name or a .toml preset.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (artifacts already there are reused).")
@click.option("--vectors", type=click.Path(exists=True, file_okay=False), help="Use these vectors instead of extracting (copied into the run).")
@click.option("--router", "router_dir", type=click.Path(exists=True, file_okay=False), help="Use this trained router (copied into the run).")
@click.option("--task", default=None, help="Task (default: the pair's).")
@click.option("--data", default=None, type=click.Path(exists=True), help="Local dataset file for real tasks (GSM8K / MATH-500 schema).")
@click.option("--n-train", default=400, show_default=True, type=int)
@click.option("--n-dev", default=200, show_default=True, type=int)
@click.option("--n-test", default=600, show_default=True, type=int)
@click.option("--site", default=None, help="Base-model site for vectors, e.g. resid_post.11 or resid_post@0.4 (default: the pair's).")
@click.option("--router-site", default=None, help="Post-RL site the router reads, e.g. resid_post.20 or resid_post@0.9 (default: the pair's router_site, else --site).")
@click.option("--taxonomy", default="auto", show_default=True, help="'auto' (planted labels if the task has them, else kmeans), 'planted', 'kmeans', 'sae' or a taxonomy directory.")
@click.option("--method", default="optimized", show_default=True, type=click.Choice(["diffmeans", "probe", "optimized"]))
@click.option("--vector-batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Optimised and bias vectors: examples per optimiser step.")
@click.option("--vector-max-tokens", default=4096, show_default=True, type=click.IntRange(min=1), help="Optimised and bias vectors: padded tokens per forward pass; bounds their peak memory, not their values.")
@click.option("--alphas", default="0.5,1,2,4", show_default=True, help="Steering strengths.")
@click.option("--thresholds", default="0.95,0.8,0.5,0.3,0.1,0.02", show_default=True, help="Router thresholds (trade recovery against budget).")
@click.option("--budgets", default=None, help="Instead of thresholds: target shares of tokens steered, each in [0, 1].")
@click.option("--decoding", default="greedy,sampled", show_default=True, help="greedy, sampled or both.")
@click.option("--seeds", "random_seeds", default=5, show_default=True, type=int, help="Seeds of the random-vector control.")
@click.option("--no-controls", is_flag=True)
@click.option("--no-oracle", is_flag=True)
@click.option("--max-new-tokens", default=None, type=int)
@click.option("--batch-size", default=256, show_default=True, type=int, help="Problems decoded together; lower it for large models.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print recovery.json.")
@click.option("--force", is_flag=True, help="Rebuild the run's artifacts made with other settings or from other inputs (only their files) instead of refusing.")
def recover(pair_spec, out, vectors, router_dir, task, data, n_train, n_dev, n_test, site, router_site, taxonomy, method, vector_batch_size, vector_max_tokens, alphas, thresholds, budgets, decoding, random_seeds, no_controls, no_oracle, max_new_tokens, batch_size, seed, as_json, force) -> None:
    """Evaluate base, post-RL, the hybrid across budgets and alphas, and all controls; write recovery.json and plots.

    Artifacts already in --out with the same settings are reused (an interrupted run resumes);
    artifacts made with other settings are refused, naming the settings that differ.
    """
    from latentreason.pair import load_pair
    from latentreason.recovery import RECOVERY_FILE, RecoverConfig, run_recovery
    from latentreason.routers import check_budget
    from latentreason.rundir import RunDir
    from latentreason.validate import check_out_dir, check_pair_sites

    try:
        if budgets is not None:
            for b in _floats(budgets):
                check_budget(b)
        cfg = RecoverConfig(
            n_train=n_train, n_dev=n_dev, n_test=n_test, site=site, router_site=router_site, taxonomy=taxonomy, method=method, vector_batch_size=vector_batch_size, vector_max_tokens=vector_max_tokens,
            alphas=_floats(alphas), thresholds=_floats(thresholds), decodings=tuple(d.strip() for d in decoding.split(",") if d.strip()),
            random_seeds=random_seeds, controls=not no_controls, oracle=not no_oracle, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, task=task, data=data,
            budgets=_floats(budgets) if budgets else (), vectors=vectors, router=router_dir,
        )
        check_pair_sites(pair_spec, {"base": [site]}, option="--site")  # before any model loads
        check_pair_sites(pair_spec, {"post_rl": [router_site]}, option="--router-site")
        check_out_dir(out)
        pair = load_pair(pair_spec)
        rd = RunDir(out)
        result = run_recovery(pair, out, cfg, force=force)
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        from latentreason.io import dumps_json

        click.echo(dumps_json(result))
        return
    click.echo(f"recovery written to {rd.recovery / RECOVERY_FILE}")
    for d, info in result["decodings"].items():
        click.echo(f"[{d}] base {info['base_acc']:.3f}  post-RL {info['post_rl_acc']:.3f}  chosen alpha {info.get('chosen_alpha')}")
        c = result["chosen"][d]
        click.echo(f"[{d}] chosen on dev: probe router, alpha {c['alpha']:g}, threshold {c['threshold']:g}: recovery {_f(c['recovery'])} [{_f(c['recovery_ci'][0])}, {_f(c['recovery_ci'][1])}] at budget {c['budget']:.3f} on {c['n']} test problems")
    if result.get("interventions_skipped"):
        click.echo(f"  no interventions: {result['interventions_skipped']}")
    for p in result.get("interventions", []):
        click.echo(f"  {p['decoding']:7s} {p['label']:48s} acc={p['acc']:.3f} recovery={_f(p['recovery'])} [{_f(p['recovery_ci'][0])}, {_f(p['recovery_ci'][1])}]")
    for p in result["points"]:
        tag = ("ORACLE " if p["is_oracle"] else "") + ("CHOSEN " if p.get("chosen") else "")
        click.echo(f"  {p['decoding']:7s} {tag}{p['router']:6s} {str(p['control'] or '-'):20s} a={p['alpha']:<5g} t={str(p.get('threshold', '-')):5s} budget={p['budget']:.3f} acc={p['acc']:.3f} recovery={_f(p['recovery'])} [{_f(p['recovery_ci'][0])}, {_f(p['recovery_ci'][1])}]")
