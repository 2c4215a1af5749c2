"""``latentreason extract``: steering vectors for the base model, one per strategy (plus a bias vector)."""

from __future__ import annotations

import click

DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS = 32, 4096  # latentreason.extract's (not imported here: `latentreason --help` loads no torch)


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism pair directory or a preset .toml.")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False), help="Activation cache directory (must hold the base model).")
@click.option("--taxonomy", "taxonomy_spec", required=True, help="Taxonomy directory (latentreason taxonomy --out), or 'planted' for the task's planted labels.")
@click.option("--site", default=None, help="Hook site, e.g. resid_post.1, or a depth fraction of the base model, e.g. resid_post@0.4 (default: the taxonomy's site, else the pair's site if cached, else the cache's first site).")
@click.option("--method", default="diffmeans", show_default=True, type=click.Choice(["diffmeans", "probe", "optimized"]))
@click.option("--bias", is_flag=True, help="Also train the general bias vector (optimised over whole post-RL completions).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory, e.g. RUN/vectors.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--min-examples", default=2, show_default=True, type=int, help="Categories with fewer examples get no vector.")
@click.option("--max-examples", default=2048, show_default=True, type=int, help="Optimised vectors: at most this many examples per category.")
@click.option("--epochs", default=30, show_default=True, type=int, help="Optimised vectors: maximum epochs (early-stopped on held-out rollouts).")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=1), help="Optimised vectors: examples per optimiser step.")
@click.option("--max-tokens", default=DEFAULT_MAX_TOKENS, show_default=True, type=click.IntRange(min=1), help="Optimised vectors: padded tokens per forward pass; bounds peak memory (an example longer than this runs alone) without changing the vectors beyond float rounding.")
@click.option("--positions", default="decision", show_default=True, type=click.Choice(["decision", "sentence"]), help="Optimised vectors: add v at the decision position only, or also at the sentence's tokens.")
@click.option("--specificity-alpha", type=float, default=None, help="Also measure and print the specificity matrix at this strength (needs planted labels).")
@click.option("--force", is_flag=True, help="Replace vectors made with other settings, or from another cache or taxonomy, in --out (only their files).")
def extract(pair_spec: str, cache_dir: str, taxonomy_spec: str, site: str | None, method: str, bias: bool, out: str, seed: int, min_examples: int, max_examples: int, epochs: int, batch_size: int, max_tokens: int, positions: str, specificity_alpha: float | None, force: bool) -> None:
    """Extract one steering vector per taxonomy category for the base model at SITE (save_vectors + manifest.json).

    Vectors with the same settings, from the same cache and taxonomy, already in --out are reused.
    """
    from latentreason.cache import ActivationCache
    from latentreason.extract import Specificity, build_vectors, specificity_matrix
    from latentreason.io import read_json
    from latentreason.pair import default_device, load_pair
    from latentreason.validate import check_finite, check_out_dir, check_pair_sites, check_positive

    try:
        for name, value in (("--min-examples", min_examples), ("--max-examples", max_examples), ("--epochs", epochs)):
            check_positive(name, value)  # every argument, before any model loads
        if specificity_alpha is not None:
            check_finite("--specificity-alpha", specificity_alpha)
        if site is not None:
            check_pair_sites(pair_spec, {"base": [site]})
        check_out_dir(out)
        pair = load_pair(pair_spec, device=default_device())
        holder: dict[str, Specificity] = {}

        def also(vectors):
            if specificity_alpha is None:
                return {}
            holder["spec"] = specificity_matrix(pair.base_model, pair.base_tokenizer, vectors, ActivationCache.open(cache_dir), specificity_alpha, format_prompt=lambda p: pair.format_prompt("base", p))
            return {"specificity.json": holder["spec"].to_dict()}

        d, vectors, reused = build_vectors(
            pair, cache_dir, taxonomy_spec, out, site, method, bias, seed=seed, min_examples=min_examples, max_examples=max_examples, optimize={"max_epochs": epochs, "batch_size": batch_size, "max_tokens": max_tokens}, positions=positions,
            also=also, also_config={"specificity_alpha": specificity_alpha}, force=force,
        )
        spec = holder.get("spec")
        if reused and specificity_alpha is not None:
            spec = Specificity.from_dict(read_json(d / "specificity.json"))
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if reused:
        click.echo(f"{d} already holds these vectors (same settings, cache and taxonomy): reused")
    for v in vectors:
        held = v.provenance.get("heldout_loss")
        click.echo(f"{v.name:>14} {v.method:>10} norm {v.norm:8.3f}  n={v.provenance.get('n_examples')}" + (f"  held-out CE {v.provenance['heldout_loss_zero']:.4f} -> {held:.4f}" if held is not None else ""))
    if spec is not None:
        click.echo(spec.table())
        click.echo(f"diagonal dominant: {spec.diagonal_dominant()}")
    click.echo(f"{len(vectors)} vectors written to {d}")
