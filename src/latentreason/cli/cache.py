"""``latentreason cache``: per-token activations of the pair's models on a run's rollouts."""

from __future__ import annotations

import click


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism pair directory or a preset .toml.")
@click.option("--rollouts", "rollouts_path", required=True, type=click.Path(file_okay=False), help="Run directory (or its rollouts/ folder).")
@click.option("--sites", default=None, help="Comma-separated hook sites, e.g. resid_post.2,resid_post.1, or depth fractions of the base model, e.g. resid_post@0.4. Default: the pair's sites, then its router site.")
@click.option("--models", default="base,post_rl", show_default=True, help="Comma-separated model roles to cache.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory, e.g. activations/RUN.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "bfloat16", "float16"]), help="Storage dtype.")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Rollouts per forward pass.")
@click.option("--shard-tokens", default=32768, show_default=True, type=int, help="Completion tokens per shard.")
@click.option("--backend", default="hf", show_default=True, help="Activation backend: hf, transformer_lens or nnsight.")
@click.option("--remote", is_flag=True, help="With --backend nnsight: run the forward passes on NDIF (key from $NDIF_API_KEY; the pair must name Hub models).")
@click.option("--force", is_flag=True, help="Replace a cache made with other settings or from other rollouts in --out (only its files).")
def cache(pair_spec: str, rollouts_path: str, sites: str | None, models: str, out: str, dtype: str, batch_size: int, shard_tokens: int, backend: str, remote: bool, force: bool) -> None:
    """Cache activations at SITES of each model on the same rollout texts (sharded safetensors, resumable)."""
    from latentreason.cache import cache_activations
    from latentreason.pair import default_device, load_pair
    from latentreason.sites import split_site_names
    from latentreason.stage import locked
    from latentreason.validate import check_out_dir, check_pair_sites, check_positive, check_roles

    roles = [m.strip() for m in models.split(",") if m.strip()]
    if remote and backend != "nnsight":
        raise click.BadParameter("--remote needs --backend nnsight (NDIF runs nnsight traces).", param_hint="--remote")
    try:
        check_positive("--batch-size", batch_size)  # every argument, before any model loads
        check_positive("--shard-tokens", shard_tokens)
        check_roles(pair_spec, roles)
        if sites is not None:
            check_pair_sites(pair_spec, {role: split_site_names(sites) for role in roles}, option="--sites")
        check_out_dir(out)
        with locked(out):  # a second writer fails here, before any model loads
            pair = load_pair(pair_spec, device=default_device())
            if remote:
                from latentreason.backends import get_backend

                backend = get_backend("nnsight", remote=True)  # raises before any network call when NDIF_API_KEY is unset
            path = cache_activations(pair, rollouts_path, out, sites or pair.default_sites(), roles, dtype=dtype, batch_size=batch_size, shard_tokens=shard_tokens, backend=backend, force=force)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"activations written to {path}")
