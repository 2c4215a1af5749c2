"""Taxonomy estimators (k-means, top-k SAE): fit/predict/save/load, normalisation, metrics, sweep, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentreason.taxonomy import (
    KMeansTaxonomy,
    SAETaxonomy,
    centroid_orthogonality,
    distinctive_tokens,
    evaluate,
    load_taxonomy,
    parse_ks,
    planted_agreement,
    stability,
    sweep,
)

SITE = "resid_post.1"


def mixture(n_per: int = 60, k: int = 4, d: int = 16, seed: int = 0, offset: float = 5.0):
    """A planted mixture: k well-separated Gaussian clusters around a common offset, with labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X = np.concatenate([offset + 3 * c + rng.normal(0, 0.3, (n_per, d)) for c in centres])
    y = np.repeat([f"s{i}" for i in range(k)], n_per)
    return X.astype(np.float32), list(y)


@pytest.mark.parametrize("est", [KMeansTaxonomy(k=4, random_state=0), SAETaxonomy(k=4, topk=1, random_state=0)], ids=["kmeans", "sae"])
def test_estimators_recover_a_planted_mixture(est):
    X, y = mixture()
    labels = est.fit(X).labels_
    assert planted_agreement(labels, y)["ari_planted"] > 0.95
    assert (est.predict(X) == labels).all()


def test_sae_cluster_is_argmax_of_pre_topk_encoder_output():
    X, _ = mixture()
    sae = SAETaxonomy(k=4, topk=2, random_state=0).fit(X)
    pre = sae.scores(X)
    assert (sae.predict(X) == pre.argmax(1).numpy()).all()
    codes = sae.transform(X)
    assert ((codes > 0).sum(1) <= 2).all()  # top-k sparse
    assert sae.val_fvu_ < 1.0 and sae.n_epochs_ >= 1


def test_taxonomy_json_edited_after_saving_is_refused(tmp_path):
    X, _ = mixture(n_per=30)
    KMeansTaxonomy(k=3, random_state=1).fit(X).save(tmp_path, site=SITE, fingerprint="abcd1234abcd1234")
    meta = json.loads((tmp_path / "taxonomy.json").read_text())
    (tmp_path / "taxonomy.json").write_text(json.dumps({**meta, "site": "resid_post.0"}))
    with pytest.raises(ValueError, match="taxonomy.json was edited after it was written"):
        load_taxonomy(tmp_path)


@pytest.mark.parametrize("cls", [KMeansTaxonomy, SAETaxonomy])
def test_save_load_round_trip_predicts_identically_from_raw_activations(cls, tmp_path):
    X, _ = mixture(n_per=30)
    est = cls(k=3, random_state=1).fit(X)
    est.save(tmp_path, site=SITE, fingerprint="abcd1234abcd1234")
    meta = json.loads((tmp_path / "taxonomy.json").read_text())
    assert {"method", "k", "site", "fingerprint", "params", "sha256"} <= set(meta)
    assert (meta["method"], meta["k"], meta["site"]) == (est.method, 3, SITE)
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "taxonomy.safetensors").exists()
    back = load_taxonomy(tmp_path)
    assert type(back) is cls and back.site_ == SITE and back.fingerprint_ == "abcd1234abcd1234"
    assert back.get_params() == est.get_params()
    Xnew = X + np.random.default_rng(5).normal(0, 0.5, X.shape).astype(np.float32)
    assert (back.predict(Xnew) == est.predict(Xnew)).all()
    torch.testing.assert_close(back.scores(Xnew), est.scores(Xnew))
    assert isinstance(cls.load(tmp_path), cls)


def test_the_artifact_applies_its_stored_normalisation():
    X, _ = mixture(n_per=30)
    est = KMeansTaxonomy(k=3, normalize="center+l2").fit(X)
    Z = X - X.mean(0)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    torch.testing.assert_close(est.normalized(X), torch.tensor(Z), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(est.mean_, torch.tensor(X.mean(0)), atol=1e-5, rtol=1e-5)
    # raw rows in, clusters out: a caller normalising first would get it wrong, so the artifact must do it
    manual = torch.cdist(torch.tensor(Z).double(), est.cluster_centers_.double()).argmin(1).numpy()
    assert (est.predict(X) == manual).all()
    # one row alone is normalised with the stored (training) mean, not its own
    assert est.predict(X[:1])[0] == est.labels_[0]


def test_predict_before_fit_says_how_to_fix_it():
    with pytest.raises(ValueError, match="not fitted yet. Call 'fit'"):
        KMeansTaxonomy(k=2).predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="not fitted yet"):
        SAETaxonomy(k=2).scores(np.zeros((3, 4)))


def test_k_larger_than_the_number_of_sentences_is_refused():
    X, _ = mixture(n_per=2, k=2)
    with pytest.raises(ValueError, match="larger than the number of sentences"):
        KMeansTaxonomy(k=5).fit(X)
    with pytest.raises(ValueError, match="larger than the number of sentences"):
        sweep(X, [2, 9])


def test_activations_of_another_width_are_refused():
    X, _ = mixture(n_per=10, d=8)
    est = KMeansTaxonomy(k=2).fit(X)
    with pytest.raises(ValueError, match="was fit on 8"):
        est.predict(np.zeros((2, 9), dtype=np.float32))


def test_metrics_of_separated_clusters_are_stable_and_agree_with_planted_labels():
    X, y = mixture()
    est = KMeansTaxonomy(k=4).fit(X)
    m = evaluate(est, X, y, n_seeds=3)
    assert {"method", "k", "silhouette", "orthogonality", "stability_ari", "ari_planted", "nmi_planted"} <= set(m)
    assert m["stability_ari"] > 0.99 and m["silhouette"] > 0.5 and m["ari_planted"] > 0.99 and m["nmi_planted"] > 0.99
    assert 0.0 <= m["orthogonality"] <= 1.0
    s, runs = stability(est, X, n_seeds=3)
    assert len(runs) == 3 and s == pytest.approx(m["stability_ari"])


def test_centroid_orthogonality_is_zero_for_orthogonal_clusters():
    Z = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    assert centroid_orthogonality(Z, np.array([0, 0, 1, 1, 2])) == pytest.approx(0.0)


def test_sweep_picks_the_planted_k_without_looking_at_planted_labels():
    X, y = mixture(k=3)
    chosen, rows = sweep(X, [2, 3, 4, 5], ["kmeans"], planted=y)
    blind, rows_blind = sweep(X, [2, 3, 4, 5], ["kmeans"])
    assert chosen.k == blind.k == 3
    assert [r["chosen"] for r in rows] == [r["chosen"] for r in rows_blind]
    assert "ari_planted" in rows[0] and "ari_planted" not in rows_blind[0]


def test_sweep_is_deterministic_given_the_seed():
    X, _ = mixture(n_per=20, k=3)
    a, _ = sweep(X, [3], ["sae"], random_state=4)
    b, _ = sweep(X, [3], ["sae"], random_state=4)
    assert torch.equal(a.W_enc_, b.W_enc_) and (a.labels_ == b.labels_).all()


def test_distinctive_tokens_name_clusters_by_their_marker():
    texts = ["S:3+4=7\n", "S:1+1=2\n", "S:2*3=6\n", "A:7\n", "A:2\n", "C:3+4=7 ok\n", "C:1+1=2 ok\n"]
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    toks = distinctive_tokens(texts, labels, 3)
    assert "^S" in toks[0] and "^A" in toks[1] and ("ok" in toks[2] or "^C" in toks[2])


def test_parse_ks_reads_single_values_ranges_and_lists():
    assert parse_ks("5") == [5] and parse_ks("2-4") == [2, 3, 4] and parse_ks("3,5,8") == [3, 5, 8]
    with pytest.raises(ValueError, match="Cannot parse"):
        parse_ks("two")
    with pytest.raises(ValueError, match="at least 2"):
        parse_ks("1-3")


# ---------------------------------------------------------------- on a real cache (organism)


@pytest.fixture(scope="module")
def small_cache(organism, tmp_path_factory):
    """A cache of the organism on 30 corpus-style worked solutions (planted steps, checks, corrections, answers)."""
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.organism.corpus import CorpusConfig, make_corpus
    from latentreason.rollouts import make_row, task_for_pair, write_rollouts

    task = task_for_pair(organism)
    exs = make_corpus(task, 30, CorpusConfig(worked_fraction=1.0, switch_continue=1.0), seed=0)
    rows = [make_row(task, rollout_id=f"r{i:03d}", model="post_rl", split="train", index=i, problem=e.problem, completion=e.completion) for i, e in enumerate(exs)]
    run = tmp_path_factory.mktemp("taxrun")
    write_rollouts(run / "rollouts", rows, organism, task, {"synthetic": True})
    out = cache_activations(organism, run, run / "activations", [SITE], progress=False)
    return ActivationCache.open(out)


def test_cli_writes_labels_clusters_metrics_and_a_taxonomy_manifest(small_cache, tmp_path):
    from latentreason.cli import main
    from latentreason.manifest import Manifest

    out = tmp_path / "tax"
    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(small_cache.directory), "--site", SITE, "--k", "2-4", "--method", "kmeans", "--out", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"method", "k", "site", "silhouette", "stability_ari", "ari_planted", "nmi_planted"} <= set(metrics)
    assert metrics["site"] == SITE and metrics["k"] in (2, 3, 4) and len(metrics["sweep"]) == 3
    labels = json.loads((out / "labels.json").read_text())["sentences"]
    assert len(labels) == len(small_cache.sentences) and {"rollout_id", "index", "cluster", "planted"} <= set(labels[0])
    clusters = json.loads((out / "clusters.json").read_text())["clusters"]
    assert len(clusters) == metrics["k"] and all(c["label"] and c["top_sentences"] for c in clusters if c["size"])
    man = Manifest.read(out, kind="taxonomy")
    man.verify(out)
    assert man.config["site"] == SITE and man.models["post_rl"]["fingerprint"] == small_cache.fingerprint("post_rl")
    assert man.extra["cache_manifest_sha256"]
    est = load_taxonomy(out)
    assert est.extra_["pooling"] == "head:3"  # the pooling travels with the artifact
    X = small_cache.sentence_pooled(SITE, "post_rl", est.extra_["pooling"])
    assert [l["cluster"] for l in labels] == est.predict(X).tolist()


def test_cli_refuses_a_site_the_cache_lacks_and_k_above_the_sentence_count(small_cache, tmp_path):
    from latentreason.cli import main

    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(small_cache.directory), "--site", "resid_post.2", "--k", "3", "--out", str(tmp_path / "a")])
    assert res.exit_code != 0 and "no site 'resid_post.2'" in res.output and "Traceback" not in res.output
    n = len(small_cache.sentences)
    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(small_cache.directory), "--site", SITE, "--k", str(n + 1), "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "larger than the number of sentences" in res.output
    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(small_cache.directory), "--site", SITE, "--k", "3", "--method", "gmm", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "--method" in res.output


# ---------------------------------------------------------------- rollouts from both models


@pytest.fixture(scope="module")
def mixed_cache(organism, tmp_path_factory):
    from _mixed_cache import make_mixed_cache

    return make_mixed_cache(organism, tmp_path_factory.mktemp("mixedtax"))


def test_taxonomy_clusters_only_the_post_rl_models_sentences(mixed_cache, tmp_path):
    from latentreason.manifest import Manifest
    from latentreason.taxonomy import fit_from_cache, write_taxonomy

    n_post = sum(s["rollout_model"] == "post_rl" for s in mixed_cache.sentences)
    assert n_post < len(mixed_cache.sentences)
    est, metrics, rows = fit_from_cache(mixed_cache, SITE, 3)
    assert metrics["n_sentences"] == n_post and metrics["roles"] == ["post_rl"] and est.extra_["roles"] == ["post_rl"]
    d = write_taxonomy(tmp_path / "tax", est, mixed_cache, metrics, rows, cache_dir=mixed_cache.directory)
    labels = json.loads((d / "labels.json").read_text())["sentences"]
    assert len(labels) == n_post and all(lab["rollout_id"].startswith("p") for lab in labels)  # no base-written sentence
    assert Manifest.read(d, kind="taxonomy").config["roles"] == ["post_rl"]
    assert json.loads((d / "metrics.json").read_text())["roles"] == ["post_rl"]
    assert load_taxonomy(d).extra_["roles"] == ["post_rl"]


def test_explicit_roles_cluster_the_other_models_sentences_too(mixed_cache, tmp_path):
    from latentreason.cli import main

    out = tmp_path / "both"
    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(mixed_cache.directory), "--site", SITE, "--k", "3", "--roles", "post_rl,base", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"on {len(mixed_cache.sentences)} sentences of post_rl,base rollouts" in res.output
    labels = json.loads((out / "labels.json").read_text())["sentences"]
    assert len(labels) == len(mixed_cache.sentences) and any(lab["rollout_id"].startswith("b") for lab in labels)
    res = CliRunner().invoke(main, ["taxonomy", "--cache", str(mixed_cache.directory), "--site", SITE, "--k", "3", "--roles", "sft", "--out", str(tmp_path / "none")])
    assert res.exit_code != 0 and "no rollouts generated by sft" in res.output and "Traceback" not in res.output
