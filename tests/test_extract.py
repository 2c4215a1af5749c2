"""Steering-vector extraction: diffmeans / probe / optimized / bias, peers, determinism, refusals, specificity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentreason.extract import (
    TargetExample,
    diffmeans_directions,
    extract_vectors,
    heldout_split,
    optimize_vector,
    probe_directions,
    specificity_matrix,
)
from latentreason.fingerprint import model_fingerprint
from latentreason.tasks.arith import STRATEGIES

SITE = "resid_post.1"
LAYER = 1


def corpus_cache(pair, root, n: int, sites: list[str], seed: int = 0):
    """Cache the pair on ``n`` corpus-style worked solutions (planted steps, checks, corrections, answers)."""
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.organism.corpus import CorpusConfig, make_corpus
    from latentreason.rollouts import make_row, task_for_pair, write_rollouts

    task = task_for_pair(pair)
    exs = make_corpus(task, n, CorpusConfig(worked_fraction=1.0, switch_continue=1.0), seed=seed)
    rows = [make_row(task, rollout_id=f"r{i:03d}", model="post_rl", split="train", index=i, problem=e.problem, completion=e.completion) for i, e in enumerate(exs)]
    write_rollouts(root / "rollouts", rows, pair, task, {"synthetic": True})
    return ActivationCache.open(cache_activations(pair, root, root / "activations", sites, progress=False))


@pytest.fixture(scope="module")
def cache(organism, tmp_path_factory):
    c = corpus_cache(organism, tmp_path_factory.mktemp("extract"), 12, [SITE, "resid_post.0"])
    counts = {s: sum(x["label"] == s for x in c.sentences) for s in STRATEGIES}
    assert min(counts.values()) >= 2, f"the fixture needs every strategy at least twice: {counts}"
    return c


def hf_reference(pair, cache):
    """Diffmeans from HF ``output_hidden_states`` (unbatched), at the same texts and positions."""
    tok, model = pair.base_tokenizer, pair.base_model
    starts: dict[str, list[torch.Tensor]] = {}
    tokens = []
    for r in cache.rollouts:
        p = tok(pair.format_prompt("base", r["prompt"]))["input_ids"]
        c = tok(r["completion"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            h = model(input_ids=torch.tensor([p + c]), output_hidden_states=True).hidden_states[LAYER + 1][0].double()
        tokens.append(h[len(p) :])
        for s, (a, _) in zip(r["sentences"], r["tokens"]["base"]["spans"]):
            starts.setdefault(s["label"], []).append(h[len(p) + a - 1])  # the token before the sentence's first token
    bg = torch.cat(tokens).mean(0)
    return {c: torch.stack(v).mean(0) - bg for c, v in starts.items() if c is not None}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_diffmeans_matches_a_direct_output_hidden_states_computation(organism, cache):
    vecs = {v.name: v for v in extract_vectors(organism, cache, "planted", SITE, "diffmeans")}
    ref = hf_reference(organism, cache)
    assert set(vecs) == set(ref) == {"step", "difference", "multiply", "answer"}
    for name, r in ref.items():
        assert rel(vecs[name].direction, r) < 1e-5, name


def test_diffmeans_matches_the_steering_vectors_library(organism, cache):
    sv = pytest.importorskip("steering_vectors")
    tok, model = organism.base_tokenizer, organism.base_model

    def lib_mean(texts: list[str]) -> torch.Tensor:  # the library reads decoder block LAYER's output = resid_post.LAYER
        vec = sv.train_steering_vector(model, tok, [(t, t) for t in texts], layers=[LAYER], read_token_index=-1, aggregator=lambda pos, neg: pos.mean(0), batch_size=64)
        return vec.layer_activations[LAYER].double()

    by_cat: dict[str, list[str]] = {}
    background = []
    for r in cache.rollouts:
        prompt, comp = organism.format_prompt("base", r["prompt"]), r["completion"]
        for s in r["sentences"]:
            by_cat.setdefault(s["label"], []).append(prompt + comp[: s["start"]])  # read at its last token: the decision position
        background += [prompt + comp[: i + 1] for i in range(len(comp))]  # char-level: one text per completion token
    bg = lib_mean(background)
    vecs = {v.name: v for v in extract_vectors(organism, cache, "planted", SITE, "diffmeans")}
    for name, texts in by_cat.items():
        assert rel(vecs[name].direction, lib_mean(texts) - bg) < 1e-5, name


def test_vectors_carry_site_fingerprint_norm_method_and_provenance(organism, cache):
    vecs = extract_vectors(organism, cache.directory, "planted", SITE, "diffmeans")
    fp = model_fingerprint(organism.base_model)
    for v in vecs:
        assert str(v.site) == SITE and v.method == "diffmeans" and v.fingerprint == fp and v.norm > 0
        assert v.provenance["cache_manifest_sha256"] and v.provenance["taxonomy"] == "planted"
        assert v.provenance["n_examples"] >= 2 and v.provenance["n_background_tokens"] > 0
        v.check_model(organism.base_model)


def test_diffmeans_and_probe_on_arrays_recover_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    d = 12
    planted = torch.zeros(d)
    planted[3] = 2.0
    X = torch.randn(200, d, generator=g) * 0.5
    y = ["a"] * 100 + ["b"] * 100
    X[:100] += planted
    dm = diffmeans_directions(X, y, X.mean(0))
    assert torch.nn.functional.cosine_similarity(dm["a"], planted, dim=0) > 0.95
    pr = probe_directions(X, y, {c: float(v.norm()) for c, v in dm.items()})
    assert torch.nn.functional.cosine_similarity(pr["a"], planted, dim=0) > 0.9
    assert torch.nn.functional.cosine_similarity(pr["b"], -planted, dim=0) > 0.9
    assert float(pr["a"].norm()) == pytest.approx(float(dm["a"].norm()), rel=1e-5)  # rescaled to the diffmeans norm


def test_probe_vectors_point_like_their_category_and_have_the_diffmeans_norm(organism, cache):
    dm = {v.name: v for v in extract_vectors(organism, cache, "planted", SITE, "diffmeans")}
    pr = {v.name: v for v in extract_vectors(organism, cache, "planted", SITE, "probe")}
    for name in dm:
        assert pr[name].method == "probe" and pr[name].norm == pytest.approx(dm[name].norm, rel=1e-5)


def opt(organism, cache, seed=0, **kw):
    return extract_vectors(organism, cache, "planted", SITE, "optimized", bias=True, seed=seed, max_examples=12, optimize={"max_epochs": 2, "batch_size": 8, **kw})


def test_optimized_vectors_are_byte_identical_for_the_same_seed(organism, cache, tmp_path):
    from latentreason.vectors import save_vectors

    a, b = opt(organism, cache), opt(organism, cache)
    assert [v.name for v in a][-1] == "bias" and set(v.name for v in a[:-1]) <= set(STRATEGIES) and len(a) >= 3
    assert b[-1].method == "bias" and b[-1].provenance["category"] is None
    for u, v in zip(a, b):
        assert u.direction.numpy().tobytes() == v.direction.numpy().tobytes(), u.name
    save_vectors(a, tmp_path / "a")
    save_vectors(b, tmp_path / "b")
    for u in a:
        assert (tmp_path / "a" / f"{u.name}.safetensors").read_bytes() == (tmp_path / "b" / f"{u.name}.safetensors").read_bytes()


def test_optimized_vectors_record_their_held_out_loss(organism, cache):
    for v in opt(organism, cache):
        p = v.provenance
        assert p["n_heldout"] >= 1 and p["n_train"] >= 1
        assert p["heldout_loss"] <= p["heldout_loss_zero"] + 1e-9  # the returned vector is the best on held-out data
        assert v.norm <= p["max_norm"] * (1 + 1e-5)


def test_held_out_split_keeps_whole_rollouts_on_one_side():
    ex = [TargetExample((1, 5, 6, 7), 0, 3, 1, 4, group=f"r{i // 3}") for i in range(30)]
    train, held = heldout_split(ex, 0.2, seed=0)
    assert len(train) + len(held) == 30 and held and train
    assert not {e.group for e in train} & {e.group for e in held}
    assert heldout_split(ex, 0.2, seed=0) == (train, held)


def test_early_stopping_uses_the_held_out_split_and_keeps_the_best_epoch(organism, cache):
    from latentreason.extract import rollout_token_ids, sentence_examples

    ids = rollout_token_ids(cache, organism.base_tokenizer)
    ex = sentence_examples(cache, ids, [s["label"] for s in cache.sentences])["difference"]
    res = optimize_vector(organism.base_model, SITE, ex, scale=30.0, lr=0.5, max_epochs=8, patience=2, batch_size=4, max_norm=10.0)
    held = [h["heldout"] for h in res.history]
    assert res.heldout_loss == pytest.approx(min(held)) and res.best_epoch == int(np.argmin(held))
    assert res.epochs < 8 or res.best_epoch == 8 or len(held) == 9
    assert res.epochs - res.best_epoch <= 2  # stopped after `patience` epochs without improvement
    assert all(h.get("norm", 0) <= 10.0 + 1e-4 for h in res.history)  # norm cap
    assert float(res.direction.norm()) <= 10.0 + 1e-4


# ------------------------------------------------------------ target-only logits, bounded memory


def random_examples(vocab: int, n: int = 9, seed: int = 0) -> list[TargetExample]:
    """Examples of varied length; odd ones add ``v`` over the sentence, and tokens run past the last target."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        n_tok = int(torch.randint(8, 40, (1,), generator=g))
        ids = tuple(torch.randint(3, vocab, (n_tok,), generator=g).tolist())
        ts = int(torch.randint(1, n_tok - 4, (1,), generator=g))
        te = int(torch.randint(ts + 1, n_tok - 2, (1,), generator=g))
        out.append(TargetExample(ids, ts - 1, te - 1 if i % 2 else ts, ts, te, group=f"g{i}"))
    return out


def full_logits_reference(model, site, v, examples):
    """The loss as it was computed before: every example whole, full-vocabulary logits at every position."""
    from latentreason.hooks import intervene

    T = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), T), dtype=torch.long)
    att = torch.zeros_like(ids)
    add = torch.zeros((len(examples), T))
    tgt = torch.zeros((len(examples), T), dtype=torch.bool)
    for j, e in enumerate(examples):
        ids[j, : len(e.input_ids)], att[j, : len(e.input_ids)] = torch.tensor(e.input_ids), 1
        add[j, e.add_start : e.add_end], tgt[j, e.target_start : e.target_end] = 1.0, True
    with intervene(model, [(site, lambda x: x + add[..., None] * v)]):
        logits = model(input_ids=ids, attention_mask=att).logits  # [b, T, vocab]
    mask = tgt[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float()[mask], ids[:, 1:][mask], reduction="sum")
    (grad,) = torch.autograd.grad(ce, v)
    return float(ce.detach()), grad, int(mask.sum())


@pytest.mark.parametrize("which", ["organism", "llama", "gpt2"])
@pytest.mark.parametrize("max_tokens,head_rows", [(None, None), (40, None), (64, 3)])
def test_target_only_logits_give_the_full_logits_loss_and_gradient(which, max_tokens, head_rows, organism, make_tiny, monkeypatch):
    import latentreason.extract as ex

    model = organism.base_model if which == "organism" else make_tiny(which, vocab=96)
    vocab, d = model.config.vocab_size, model.config.hidden_size
    if head_rows:  # force the LM head to run in chunks of 3 target rows
        monkeypatch.setattr(ex, "LOGIT_CHUNK_ELEMENTS", head_rows * model.get_output_embeddings().weight.shape[0])
    examples = random_examples(vocab)
    v = (torch.randn(d, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_(True)
    with ex._frozen(model):
        ref_loss, ref_grad, ref_n = full_logits_reference(model, SITE, v, examples)
        loss, n = ex.vector_loss(model, SITE, v, examples, max_tokens=max_tokens, grad_scale=1.0)
    assert n == ref_n == sum(e.target_end - e.target_start for e in examples)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    torch.testing.assert_close(v.grad, ref_grad, rtol=1e-5, atol=1e-5 * float(ref_grad.abs().max()))


def test_no_full_vocabulary_logits_are_built_in_training(organism, cache, monkeypatch):
    """The LM head only ever sees target rows ``[m, d_model]``, never ``[batch, seq, d_model]``."""
    import latentreason.extract as ex
    from latentreason.extract import rollout_token_ids, sentence_examples

    monkeypatch.setattr(ex, "LOGIT_CHUNK_ELEMENTS", 5 * organism.base_model.config.vocab_size)  # chunks of 5 rows
    model = organism.base_model
    seen: list[tuple[int, ...]] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        ids = rollout_token_ids(cache, organism.base_tokenizer)
        exs = sentence_examples(cache, ids, [s["label"] for s in cache.sentences])["difference"]
        optimize_vector(model, SITE, exs, scale=30.0, max_epochs=2, batch_size=4)
        n_targets = sum(e.target_end - e.target_start for e in exs)
    finally:
        handle.remove()
    assert seen and all(len(s) == 2 and s[0] <= 5 for s in seen), sorted(set(seen))[:5]
    assert sum(s[0] for s in seen) >= 2 * n_targets  # 2 epochs over train and held-out examples, target rows only


def test_max_tokens_bounds_every_forward_pass_and_leaves_the_vector_unchanged(organism, make_tiny):
    from latentreason.extract import _frozen

    model = make_tiny("llama", vocab=96)
    examples = random_examples(96, n=12) + [TargetExample(tuple(range(3, 63)), 4, 5, 5, 9, group="long")]  # 60 tokens, target ends at 9
    shapes: list[tuple[int, int]] = []
    body = model.base_model
    handle = body.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        with _frozen(model):
            small = optimize_vector(model, "resid_post.1", examples, scale=3.0, lr=0.3, max_epochs=3, batch_size=6, max_tokens=48)
        bounded = list(shapes)
        shapes.clear()
        big = optimize_vector(model, "resid_post.1", examples, scale=3.0, lr=0.3, max_epochs=3, batch_size=6, max_tokens=None)
    finally:
        handle.remove()
    assert bounded and all(b * t <= 48 or b == 1 for b, t in bounded)
    assert max(t for _, t in bounded + shapes) <= 39  # every example is cut at its last target: the 60-token one runs 9
    assert max(b * t for b, t in shapes) > 48  # without a budget a step runs in one pass
    assert (small.batch_size, small.max_tokens, big.max_tokens) == (6, 48, None)
    torch.testing.assert_close(small.direction, big.direction, rtol=1e-4, atol=1e-5)
    assert small.heldout_loss == pytest.approx(big.heldout_loss, rel=1e-5)


def test_microbatches_sort_by_length_and_pack_to_the_budget():
    from latentreason.extract import microbatches

    exs = [TargetExample(tuple(range(n)), 0, 1, 1, n) for n in (10, 3, 7, 3, 20, 5)]
    packs = microbatches(exs, 15)
    assert sorted(i for p in packs for i in p) == list(range(6))
    assert packs == [[1, 3, 5], [2], [0], [4]]  # 3+3+5 -> 3*5=15; 7 alone (2*10 > 15); 20 longer than the budget runs alone
    assert microbatches(exs, None) == [[1, 3, 5, 2, 0, 4]]


def test_specificity_reads_logits_only_at_decision_positions_and_matches_full_logits(organism, cache):
    from latentreason.extract import decision_contexts
    from latentreason.hooks import intervene
    from latentreason.tasks.arith import MARKER_OF

    model, tok = organism.base_model, organism.base_tokenizer
    vec = extract_vectors(organism, cache, "planted", SITE, "diffmeans")[0]
    contexts = decision_contexts(cache, tok)[:12]
    seen: list[tuple[int, ...]] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    try:
        spec = specificity_matrix(model, tok, [vec], contexts, alpha=2.0, batch_size=5)
    finally:
        handle.remove()
    assert seen and all(len(s) == 2 for s in seen)  # [rows, d_model]: one row per context, never [batch, seq, d_model]
    mids = [tok(MARKER_OF[s], add_special_tokens=False)["input_ids"][0] for s in spec.strategies]
    for j, strat in enumerate(spec.contexts):
        rows = []
        for c, lab in contexts:
            if lab != strat:
                continue
            ids = torch.tensor([c])
            with torch.no_grad():
                p0 = model(input_ids=ids).logits[0, -1].softmax(-1)[mids]
                add = torch.zeros(1, len(c))
                add[0, -1] = 1.0
                with intervene(model, [(SITE, lambda x: x + add[..., None] * (2.0 * vec.direction))]):
                    p1 = model(input_ids=ids).logits[0, -1].softmax(-1)[mids]
            rows.append((p1 - p0).double())
        np.testing.assert_allclose(spec.by_context[0, j], torch.stack(rows).mean(0).numpy(), atol=1e-5)


def test_non_positive_batching_is_refused_before_any_compute(organism):
    ex = [TargetExample((1, 5, 6, 7), 0, 1, 1, 4, group=f"r{i}") for i in range(4)]
    with pytest.raises(ValueError, match=r"batch_size=0"):
        optimize_vector(organism.base_model, SITE, ex, scale=1.0, batch_size=0)
    with pytest.raises(ValueError, match=r"max_tokens=0"):
        optimize_vector(organism.base_model, SITE, ex, scale=1.0, max_tokens=0)


# ------------------------------------------------------------------------ refusals


def test_taxonomy_from_another_site_is_refused(organism, cache, tmp_path):
    from latentreason.taxonomy import fit_from_cache, write_taxonomy

    est, metrics, rows = fit_from_cache(cache, "resid_post.0", 3)
    write_taxonomy(tmp_path / "tax0", est, cache, metrics, rows, cache_dir=cache.directory)
    with pytest.raises(ValueError, match=r"fit at site 'resid_post.0'.*requested at 'resid_post.1'.*--site resid_post.0"):
        extract_vectors(organism, cache, tmp_path / "tax0", SITE, "diffmeans")
    vecs = extract_vectors(organism, cache, tmp_path / "tax0", None, "diffmeans")  # site defaults to the taxonomy's
    assert {v.name for v in vecs} <= {"cluster0", "cluster1", "cluster2"} and all(str(v.site) == "resid_post.0" for v in vecs)
    assert all(v.provenance["taxonomy_method"] == "kmeans" and v.provenance["k"] == 3 for v in vecs)


def test_a_vector_refuses_a_model_with_another_fingerprint_or_hidden_size(organism, cache, make_tiny):
    v = extract_vectors(organism, cache, "planted", SITE, "diffmeans")[0]
    other = make_tiny("qwen2")  # hidden size 32, not 96
    with pytest.raises(ValueError, match="hidden size is 32"):
        v.check_model(other)
    import copy

    twin = copy.deepcopy(organism.base_model)
    with torch.no_grad():
        next(twin.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="was made for model"):
        v.check_model(twin)
    with pytest.raises(ValueError, match="was made for model"):
        specificity_matrix(twin, organism.base_tokenizer, [v], cache, 1.0)


def test_a_cache_made_with_another_base_model_is_refused(organism, cache):
    import copy

    twin = copy.deepcopy(organism.base_model)
    with torch.no_grad():
        next(twin.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="fingerprint"):
        extract_vectors(twin, cache, "planted", SITE, "diffmeans")


def test_bad_method_and_missing_site_are_refused(organism, cache):
    with pytest.raises(ValueError, match="Unknown extraction method"):
        extract_vectors(organism, cache, "planted", SITE, "pca")
    with pytest.raises(ValueError, match="no site 'resid_post.2'"):
        extract_vectors(organism, cache, "planted", "resid_post.2", "diffmeans")
    with pytest.raises(ValueError, match=r"batch_size=0.*positive integer"):
        extract_vectors(organism, cache, "planted", SITE, "optimized", optimize={"batch_size": 0})
    with pytest.raises(ValueError, match=r"max_tokens=-1.*positive integer"):
        extract_vectors(organism, cache, "planted", SITE, "optimized", optimize={"max_tokens": -1})


def test_the_site_defaults_to_the_pairs_site_and_takes_depth_fractions(organism, cache):
    from latentreason.extract import default_site

    assert len(cache.sites) == 2 and organism.defaults["site"] == SITE
    assert all(str(v.site) == SITE for v in extract_vectors(organism, cache, "planted", None, "diffmeans"))  # the pair's site, held by the cache
    assert default_site(cache, "planted", {"site": "resid_post.0"}) == "resid_post.0"
    assert default_site(cache, "planted", {"site": "resid_post.2"}) == cache.sites[0]  # not cached: the cache's first site
    assert default_site(cache, "planted", None) == cache.sites[0]
    depth = extract_vectors(organism, cache, "planted", "resid_post@0.4", "diffmeans")  # floor(0.4 * 3 layers) = 1
    plain = extract_vectors(organism, cache, "planted", SITE, "diffmeans")
    assert [str(v.site) for v in depth] == [SITE] * len(plain) and all(torch.equal(a.direction, b.direction) for a, b in zip(depth, plain))


def test_extract_vectors_is_exported_lazily_from_the_package():
    import latentreason

    assert latentreason.extract_vectors is extract_vectors
    with pytest.raises(AttributeError):
        latentreason.no_such_thing  # noqa: B018


def test_cli_writes_vectors_with_a_manifest_and_refuses_another_site(organism, cache, tmp_path):
    from latentreason.cli import main
    from latentreason.manifest import Manifest
    from latentreason.vectors import load_vectors

    out = tmp_path / "vec"
    res = CliRunner().invoke(main, ["extract", "--pair", organism.source, "--cache", str(cache.directory), "--taxonomy", "planted", "--site", SITE, "--method", "probe", "--out", str(out), "--specificity-alpha", "1"])
    assert res.exit_code == 0, res.output
    assert "specificity" in res.output
    vecs = load_vectors(out)
    assert set(vecs) == {"step", "difference", "multiply", "answer"}
    man = Manifest.read(out, kind="vectors")
    man.verify(out)
    assert man.models["base"]["fingerprint"] == model_fingerprint(organism.base_model) and man.config["method"] == "probe"
    assert json.loads((out / "specificity.json").read_text())["vectors"] == sorted(vecs)
    res = CliRunner().invoke(main, ["extract", "--pair", organism.source, "--cache", str(cache.directory), "--taxonomy", "planted", "--site", "resid_post.2", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "no site 'resid_post.2'" in res.output and "Traceback" not in res.output


def test_cli_batch_size_and_max_tokens_reach_the_optimiser(organism, cache, tmp_path):
    from latentreason.cli import main
    from latentreason.cli.extract import DEFAULT_BATCH_SIZE as CLI_BATCH
    from latentreason.cli.extract import DEFAULT_MAX_TOKENS as CLI_TOKENS
    from latentreason.extract import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS
    from latentreason.manifest import Manifest
    from latentreason.vectors import load_vectors

    assert (CLI_BATCH, CLI_TOKENS) == (DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS)
    out = tmp_path / "opt"
    args = ["extract", "--pair", organism.source, "--cache", str(cache.directory), "--taxonomy", "planted", "--site", "resid_post@0.4", "--method", "optimized", "--bias", "--epochs", "1", "--max-examples", "6"]
    res = CliRunner().invoke(main, [*args, "--batch-size", "3", "--max-tokens", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    vecs = load_vectors(out)
    assert vecs and all(v.provenance["batch_size"] == 3 and v.provenance["max_tokens"] == 64 and str(v.site) == SITE for v in vecs.values())
    config = Manifest.read(out, kind="vectors").config
    assert config["site"] == SITE and {"batch_size": 3, "max_tokens": 64}.items() <= config["optimize"].items()
    for flag in ("--batch-size", "--max-tokens"):
        res = CliRunner().invoke(main, [*args, flag, "0", "--out", str(tmp_path / "bad")])
        assert res.exit_code != 0 and flag in res.output and "Traceback" not in res.output and not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------ organism


@pytest.mark.slow
def test_optimized_vectors_are_specific_on_the_organism(organism, tmp_path):
    """In the base model, at post-RL decision positions, each strategy vector raises its own marker most."""
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.rollouts import generate_rollouts, task_for_pair, write_rollouts

    task = task_for_pair(organism)
    rows = generate_rollouts(organism, task, "train", 200, seed=1, models=["post_rl"], temperature=1.0, batch_size=200, max_new_tokens=96)
    write_rollouts(tmp_path / "rollouts", rows, organism, task, {"temperature": 1.0})
    cache = ActivationCache.open(cache_activations(organism, tmp_path, tmp_path / "act", [SITE], progress=False))
    vecs = extract_vectors(organism, cache, "planted", SITE, "optimized", min_examples=30, max_examples=192, optimize={"max_epochs": 6, "batch_size": 16, "patience": 3})
    assert len(vecs) >= 2
    spec = specificity_matrix(organism.base_model, organism.base_tokenizer, vecs, cache, alpha=1.0, max_per_context=100)
    assert spec.diagonal_dominant(), spec.table()


# ------------------------------------------------------------------------ rollouts from both models


@pytest.fixture(scope="module")
def mixed_cache(organism, tmp_path_factory):
    from _mixed_cache import make_mixed_cache

    return make_mixed_cache(organism, tmp_path_factory.mktemp("mixedext"))


def test_vectors_learn_categories_only_from_the_post_rl_models_rollouts(organism, mixed_cache, tmp_path):
    from _mixed_cache import N_BASE, N_POST

    from latentreason.extract import categories_from
    from latentreason.taxonomy import fit_from_cache, write_taxonomy

    cats = categories_from(mixed_cache, "planted", SITE)
    base_written = [s["rollout_model"] == "base" for s in mixed_cache.sentences]
    assert all(c is None for c, b in zip(cats.labels, base_written) if b) and cats.meta["roles"] == ["post_rl"]
    vecs = {v.name: v for v in extract_vectors(organism, mixed_cache, "planted", SITE, "diffmeans")}
    assert vecs["answer"].provenance["n_examples"] == N_POST and vecs["answer"].provenance["roles"] == ["post_rl"]  # not + N_BASE
    both = {v.name: v for v in extract_vectors(organism, mixed_cache, "planted", SITE, "diffmeans", roles="post_rl,base")}
    assert both["answer"].provenance["n_examples"] == N_POST + N_BASE
    est, metrics, rows = fit_from_cache(mixed_cache, SITE, 3)  # a taxonomy's roles carry over to its categories
    tax = write_taxonomy(tmp_path / "tax", est, mixed_cache, metrics, rows, cache_dir=mixed_cache.directory)
    cats = categories_from(mixed_cache, tax, SITE)
    assert [c is None for c in cats.labels] == base_written


def test_router_training_data_reads_only_post_rl_rollouts(mixed_cache):
    from latentreason.recovery import router_training_data

    labels = [0] * len(mixed_cache.sentences)  # every sentence labelled: the base ones must still not count
    X, y = router_training_data(mixed_cache, SITE, labels)
    post = mixed_cache.generated_by("post_rl")
    n_tokens = sum(r["tokens"]["post_rl"]["length"] for r in post.rollouts)
    assert int((y == 0).sum()) == len(post.sentences)
    assert X.shape[0] == n_tokens + sum(1 for r in post.rollouts for s, _ in r["tokens"]["post_rl"]["spans"] if s == 0)  # first sentences start at the prompt's last token
    _, y_both = router_training_data(mixed_cache, SITE, labels, roles="post_rl,base")
    assert int((y_both == 0).sum()) == len(mixed_cache.sentences)
