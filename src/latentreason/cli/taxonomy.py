"""``latentreason taxonomy``: cluster the post-RL model's sentence activations into strategies."""

from __future__ import annotations

import click


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False), help="Activation cache directory (latentreason cache --out).")
@click.option("--site", default=None, help="Hook site to cluster at, e.g. resid_post.1 or resid_post@0.4 (must be in the cache). Default: the cache's first site (the pair's site).")
@click.option("--k", "k_spec", default=None, help="Number of clusters: 5, a range 2-8 or a list 3,5,8 (a range or list is swept). Default: 2-8, at most one cluster per sentence.")
@click.option("--method", "methods", default="kmeans", show_default=True, help="kmeans, sae, or both as kmeans,sae (swept).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory, e.g. RUN/taxonomy.")
@click.option("--seeds", "n_seeds", default=3, show_default=True, type=int, help="Seeds for the stability metric (>= 2).")
@click.option("--seed", default=0, show_default=True, type=int, help="random_state of the chosen fit.")
@click.option("--pooling", default="head:3", show_default=True, help="Sentence representation: 'mean' over all its tokens or 'head:N' over its first N tokens.")
@click.option("--roles", default="post_rl", show_default=True, help="Cluster only sentences of rollouts these models generated (comma-separated, e.g. post_rl,base).")
@click.option("--force", is_flag=True, help="Replace a taxonomy made with other settings or from another cache in --out (only its files).")
def taxonomy(cache_dir: str, site: str | None, k_spec: str | None, methods: str, out: str, n_seeds: int, seed: int, pooling: str, roles: str, force: bool) -> None:
    """Fit a k-means or top-k SAE taxonomy on post-RL sentence activations (labels.json, clusters.json, metrics.json).

    With several K or methods, one is chosen by stability then silhouette, never by planted labels
    (see latentreason.taxonomy.sweep).
    """
    from latentreason.taxonomy import METHODS, build_taxonomy, parse_ks

    ms = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        raise click.BadParameter(f"{methods!r}: use kmeans, sae or kmeans,sae.", param_hint="--method")
    try:
        from latentreason.validate import check_out_dir

        if n_seeds < 2:
            raise ValueError(f"--seeds={n_seeds}: the stability metric needs at least 2 seeds (3 recommended).")
        if k_spec is not None:
            parse_ks(k_spec)
        check_out_dir(out)
        d, metrics, rows = build_taxonomy(cache_dir, out, site, k_spec, ms, n_seeds=n_seeds, random_state=seed, pooling=pooling, roles=roles, force=force)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if len(rows) > 1:
        click.echo(f"{'method':>7} {'k':>3} {'silhouette':>10} {'stability':>9} {'orthog.':>8}" + (f" {'ARI*':>6} {'NMI*':>6}" if "ari_planted" in rows[0] else ""))
        for r in rows:
            line = f"{r['method']:>7} {r['k']:>3} {r['silhouette']:>10.3f} {r['stability_ari']:>9.3f} {r['orthogonality']:>8.3f}"
            if "ari_planted" in r:
                line += f" {r['ari_planted']:>6.3f} {r['nmi_planted']:>6.3f}"
            click.echo(line + ("  <- chosen" if r["chosen"] else ""))
        if "ari_planted" in rows[0]:
            click.echo("* against planted labels: reported, never used to choose.")
    summary = f"{metrics['method']} k={metrics['k']} at {metrics['site']} on {metrics['n_sentences']} sentences of {','.join(metrics['roles'])} rollouts: silhouette {metrics['silhouette']:.3f}, stability {metrics['stability_ari']:.3f}"
    if "ari_planted" in metrics:
        summary += f", ARI vs planted {metrics['ari_planted']:.3f}, NMI {metrics['nmi_planted']:.3f}"
    click.echo(summary)
    click.echo(f"taxonomy written to {d}")
