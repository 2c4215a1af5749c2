"""One-GPU check of the real-size path, on a random-weight pair shaped like Qwen2.5-Math-1.5B.

    bash benchmarks/gpu_check.sh                 # one GPU, bf16; about 1-2 minutes on an H100, at most 5
    python benchmarks/gpu_check.py --cpu-smoke   # the same phases, tiny config, on CPU (tests/test_real_pairs.py)

Nothing is downloaded: the Qwen2 configuration is written out by hand (hidden 1536, 28 layers,
12 heads, 2 KV heads, MLP 8960, vocabulary 151936, tied embeddings), weights are random, and the
tokenizer is a word-level one over the whole vocabulary (``w0 w1 ...``). Phases:

1. **build** two models (base, post-RL) in ``--dtype`` on ``--device``.
2. **cache**: synthetic rollouts through ``cache.cache_activations`` (both models, one site),
   read back with ``ActivationCache``; HF and nnsight backends compared when nnsight is installed.
3. **steering**: ``steering.steered_decode`` against plain ``generation.decode``, same batch.
4. **hybrid (ids)**: ``HybridEngine`` at ``--batch`` x ``--new-tokens`` against the two-model
   limit (one KV-cached forward of each model per token), as ``bench_hybrid.py`` measures it;
   alpha = 0 must reproduce plain base decoding.
5. **hybrid (text)**: the same engine when the post-RL tokenizer differs (``latentreason.xtok``),
   on a smaller batch; alpha = 0 must give the same tokens as the batched path.
6. **preset**: the base model saved and loaded back through a TOML preset with
   ``dtype = "float16"`` and ``device_map = "auto"`` (honoured only when CUDA is available).

Every phase prints one line; correctness checks fail the run (exit 1), speed is reported. The
last line is ``GPU_CHECK {json}``; ``--out FILE`` also writes that JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

from latentreason.generation import KVStepper, decode, left_pad  # noqa: E402
from latentreason.hybrid import HybridEngine  # noqa: E402
from latentreason.pair import ModelPair, ModelSpec, resolve_dtype  # noqa: E402
from latentreason.routers import ProbeRouter  # noqa: E402
from latentreason.vectors import SteeringVector  # noqa: E402

# Qwen2.5-Math-1.5B's architecture (its config.json, written out so nothing is downloaded)
QWEN25_MATH_15B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
)
TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "."]  # ids 0..4; "." ends sentences in synthetic completions


class Check:
    """Collects phase results; a failed check makes the run exit 1."""

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}
        self.failures: list[str] = []

    def phase(self, name: str, **values: Any) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # peak GPU memory of the phase (reset before each)
            values["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.summary[name] = values
        print(f"[{name}] " + "  ".join(f"{k}={_fmt(v)}" for k, v in values.items()), flush=True)

    def require(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            print(f"  FAILED: {what}", flush=True)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[Any, float]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def word_tokenizer(vocab_size: int, shuffle_seed: int | None = None):
    """A word-level tokenizer over ``vocab_size`` ids: specials, ``.``, then words ``w0 w1 ...`` (ids shuffled by ``shuffle_seed``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    ids = list(range(len(SPECIALS), vocab_size))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(ids)
    vocab.update({f"w{j}": i for j, i in enumerate(ids)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def build_model(cfg: dict[str, Any], dtype: torch.dtype, device: str, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**cfg, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


class NoEOS:
    """A tokenizer whose EOS never matches, so every row runs the full length (as bench_hybrid.py does)."""

    def __init__(self, tok) -> None:
        self._tok = tok

    def __getattr__(self, name: str):
        return -1 if name == "eos_token_id" else getattr(self._tok, name)

    def __call__(self, *a, **k):
        return self._tok(*a, **k)


def words(rng: random.Random, n: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(vocab_size - len(SPECIALS))}" for _ in range(n))


def prompts_for(n: int, length: int, vocab_size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [words(rng, length - rng.randrange(0, max(1, length // 4)), vocab_size) for _ in range(n)]  # ragged: left padding is exercised


class SyntheticTask:
    """The minimum of a task that rollouts need (no grading dependencies)."""

    name = "gsm8k"

    def prompt(self, p: dict[str, str]) -> str:
        return p["question"]

    def grade(self, p: dict[str, str], completion: str) -> bool:
        return False

    def extract_answer(self, completion: str) -> None:
        return None

    def problem_to_json(self, p: dict[str, str]) -> dict[str, str]:
        return p


def phase_cache(check: Check, pair: ModelPair, site: str, args, tmp: Path) -> None:
    from latentreason.cache import ActivationCache, cache_activations
    from latentreason.rollouts import make_row, write_rollouts

    vocab = pair.base_model.config.vocab_size
    rng = random.Random(1)
    task = SyntheticTask()
    rows = []
    for i in range(args.cache_rollouts):
        sentences = [words(rng, rng.randrange(4, 24), vocab) + " ." for _ in range(max(1, args.cache_tokens // 14))]
        problem = {"id": f"p{i}", "question": words(rng, args.prompt_tokens, vocab), "gold": "0"}
        rows.append(make_row(task, rollout_id=f"post_rl-train-{i:05d}", model="post_rl", split="train", index=i, problem=problem, completion=" ".join(sentences)))
    write_rollouts(tmp / "rollouts", rows, pair, task)
    out, secs = timed(lambda: cache_activations(pair, tmp / "rollouts", tmp / "activations", [site], ("base", "post_rl"), dtype=args.cache_dtype, batch_size=args.cache_batch, progress=False), args.device)
    cache = ActivationCache.open(out)
    n_tok = sum(cache.manifest.extra["n_tokens"].values())
    pooled = cache.sentence_pooled(site, "post_rl")
    check.require(pooled.shape == (len(cache.sentences), pair.post_rl_model.config.hidden_size) and bool(torch.isfinite(pooled).all()), "cache: pooled sentence activations have the wrong shape or non-finite values")
    agree = "skipped (nnsight not installed)"
    if importlib.util.find_spec("nnsight") is not None:
        from latentreason.backends import get_backend

        tok = pair.base_tokenizer
        ids, mask = left_pad([tok(r["prompt"] + " " + r["completion"]).input_ids[:256] for r in rows[:4]], tok.pad_token_id, args.device)
        a = get_backend("hf").activations(pair.base_model, ids, mask, [site])[site].float()
        b = get_backend("nnsight").activations(pair.base_model, ids, mask, [site])[site].float()
        agree = float((a - b).norm() / a.norm().clamp_min(1e-12))
        check.require(agree < 1e-2, f"cache: hf and nnsight backends disagree (relative error {agree:.3g})")
    check.phase("cache", rollouts=len(rows), completion_tokens=n_tok, seconds=secs, tokens_per_s=n_tok / secs, sentences=len(cache.sentences), storage=args.cache_dtype, hf_vs_nnsight_rel_err=agree)


def phase_steering(check: Check, pair: ModelPair, site: str, args) -> None:
    from latentreason.steering import steered_decode

    tok, model = pair.base_tokenizer, pair.base_model
    prompts = prompts_for(args.batch, args.prompt_tokens, model.config.vocab_size, seed=2)
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id, args.device)
    n = args.steer_tokens
    g = torch.Generator().manual_seed(0)
    d = model.config.hidden_size
    vec = SteeringVector("check", torch.randn(d, generator=g) * 8, site, "random", pair.fingerprint("base"))
    kw = dict(max_new_tokens=n, eos_token_id=-1, pad_token_id=tok.pad_token_id)
    decode(model, ids[:, :8], mask[:, :8], **{**kw, "max_new_tokens": 2})  # warm-up
    plain, t_plain = timed(lambda: decode(model, ids, mask, **kw), args.device)
    steered, t_steer = timed(lambda: steered_decode(model, ids, mask, vectors=[(vec, 1.0)], at="all", **kw), args.device)
    zero = steered_decode(model, ids, mask, vectors=[(vec, 0.0)], at="all", **kw)
    check.require(torch.equal(zero.tokens, plain.tokens), "steering: alpha = 0 changed the generated tokens")
    changed = int((steered.tokens != plain.tokens).any(1).sum())
    check.require(changed > 0, "steering: a large vector changed no row")
    tps = lambda t: args.batch * n / t  # noqa: E731
    check.phase("steering", batch=args.batch, new_tokens=n, unsteered_tok_s=tps(t_plain), steered_tok_s=tps(t_steer), ratio=t_plain / t_steer, rows_changed=changed)


def _router_and_vectors(pair: ModelPair, site: str) -> tuple[list[SteeringVector], ProbeRouter]:
    g = torch.Generator().manual_seed(0)
    d_b, d_p = pair.base_model.config.hidden_size, pair.post_rl_model.config.hidden_size
    vectors = [SteeringVector(f"v{i}", torch.randn(d_b, generator=g), site, "random", pair.fingerprint("base")) for i in range(3)]
    X = torch.randn(600, d_p, generator=g)
    router = ProbeRouter(["v0", "v1", "v2"], site, threshold=0.5).fit(X, torch.arange(600) % 4 - 1, fingerprint=pair.fingerprint("post_rl"))
    return vectors, router


def two_model_limit(pair: ModelPair, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> None:
    with torch.no_grad():
        b, p = KVStepper(pair.base_model, ids, mask), KVStepper(pair.post_rl_model, ids, mask)
        nxt = None
        for step in range(new_tokens):
            p.forward(*p.feed(step, nxt))
            nxt = b.forward(*b.feed(step, nxt)).argmax(-1)


def phase_hybrid(check: Check, pair: ModelPair, site: str, args) -> float:
    from latentreason.routers import RandomTimingRouter

    vectors, router = _router_and_vectors(pair, site)
    tok = pair.base_tokenizer
    prompts = prompts_for(args.batch, args.prompt_tokens, pair.base_model.config.vocab_size, seed=3)
    ids, mask = left_pad([tok(p).input_ids for p in prompts], tok.pad_token_id, args.device)
    # the probe reads every token; a random 10% of tokens are steered (a probe on random weights rarely fires)
    engine = HybridEngine(pair, vectors, RandomTimingRouter(router, 0.1, seed=0), alpha=1.0)
    check.require(engine.feeding == "ids", f"hybrid: a pair sharing one tokenizer should feed ids, got {engine.feeding!r}")
    # correctness first (EOS honoured): alpha = 0 reproduces plain base decoding on a short run
    short = min(32, args.new_tokens)
    plain = decode(pair.base_model, ids, mask, max_new_tokens=short, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).completions(tok)
    zero = HybridEngine(pair, vectors, router, alpha=0.0).generate(prompts, max_new_tokens=short)
    check.require(zero.completions == plain, "hybrid: alpha = 0 does not reproduce plain base decoding")
    pair.base_tokenizer = NoEOS(tok)  # from here every row runs the full length
    try:
        two_model_limit(pair, ids[:4], mask[:4], 4)  # warm-up
        _, t_limit = timed(lambda: two_model_limit(pair, ids, mask, args.new_tokens), args.device)
        res, t_hybrid = timed(lambda: engine.generate(prompts, max_new_tokens=args.new_tokens), args.device)
    finally:
        pair.base_tokenizer = tok
    limit, hybrid = args.batch * args.new_tokens / t_limit, res.generated_tokens / t_hybrid
    check.require(res.generated_tokens == args.batch * args.new_tokens, "hybrid: rows stopped early despite the EOS being disabled")
    check.phase("hybrid_ids", batch=args.batch, new_tokens=args.new_tokens, two_model_limit_tok_s=limit, hybrid_tok_s=hybrid, ratio=hybrid / limit, goal=">= 0.85", budget=res.budget)
    return hybrid


def phase_cross(check: Check, pair: ModelPair, site: str, args) -> None:
    vocab = pair.base_model.config.vocab_size
    post_tok = word_tokenizer(vocab, shuffle_seed=7)  # the same words under other ids: a different vocabulary
    cross = ModelPair("gpu-check-xtok", pair.task, pair.base_model, pair.post_rl_model, pair.base_tokenizer, post_tok, pair.base_spec, pair.post_rl_spec, defaults=pair.defaults)
    vectors, router = _router_and_vectors(cross, site)
    prompts = prompts_for(args.cross_batch, args.prompt_tokens, vocab, seed=4)
    ids_engine = HybridEngine(pair, vectors, router, alpha=0.0)
    text_engine = HybridEngine(cross, vectors, router, alpha=0.0)
    check.require(text_engine.feeding == "text", f"hybrid (text): differing tokenizers should re-tokenise, got {text_engine.feeding!r}")
    tok = pair.base_tokenizer
    n = args.cross_tokens
    for p in (pair, cross):
        p.base_tokenizer = NoEOS(tok)
    try:
        a, t_ids = timed(lambda: ids_engine.generate(prompts, max_new_tokens=n), args.device)
        b, t_text = timed(lambda: text_engine.generate(prompts, max_new_tokens=n), args.device)
    finally:
        for p in (pair, cross):
            p.base_tokenizer = tok
    check.require(torch.equal(a.tokens, b.tokens), "hybrid (text): at alpha = 0 the re-tokenising path generated other tokens than the batched path")
    toks = args.cross_batch * n
    check.phase("hybrid_text", batch=args.cross_batch, new_tokens=n, ids_path_tok_s=toks / t_ids, text_path_tok_s=toks / t_text, slowdown=t_text / t_ids)


def phase_preset(check: Check, pair: ModelPair, args, tmp: Path) -> None:
    from latentreason.pair import load_pair

    d = tmp / "model"
    _, t_save = timed(lambda: (pair.base_model.save_pretrained(d), pair.base_tokenizer.save_pretrained(d)), "cpu")
    preset = tmp / "check.toml"
    preset.write_text(
        'name = "gpu-check"\ntask = "gsm8k"\n[base]\nmodel = "./model"\n[post_rl]\nmodel = "./model"\n'
        '[defaults]\nsites = ["resid_post@0.4"]\ndtype = "float16"\ndevice_map = "auto"\nmax_new_tokens = 64\n',
        encoding="utf-8",
    )
    cuda = torch.cuda.is_available()
    loaded, t_load = timed(lambda: load_pair(preset, device=None if cuda else "cpu"), args.device)
    m = loaded.base_model
    check.require(m.dtype == torch.float16, f"preset: dtype = float16 loaded {m.dtype}")
    dmap = getattr(m, "hf_device_map", None)
    if cuda:
        check.require(dmap is not None, "preset: device_map = 'auto' was not passed to from_pretrained on a CUDA machine")
    ids = torch.tensor([loaded.base_tokenizer("w1 w2 w3 w4").input_ids], device=next(m.parameters()).device)
    with torch.no_grad():
        logits = m(input_ids=ids).logits
    check.require(bool(torch.isfinite(logits).all()), "preset: float16 forward gave non-finite logits")
    bf = load_pair(preset, device=args.device if not cuda else None, dtype="bfloat16")
    check.require(bf.base_model.dtype == torch.bfloat16, f"preset: dtype override bfloat16 loaded {bf.base_model.dtype}")
    check.phase("preset", save_s=t_save, load_s=t_load, dtype=str(m.dtype).removeprefix("torch."), device_map=json.dumps(dmap) if dmap else "none (no CUDA: device_map is ignored)", site=loaded.defaults["site"])
    del loaded, bf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="Reduced form on CPU: tiny config, few tokens (what CI runs).")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="Model dtype (default bfloat16; float32 with --cpu-smoke).")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--out", default=None, help="Also write the summary JSON here.")
    ap.add_argument("--skip", default="", help="Comma-separated phases to skip: cache,steering,hybrid,cross,preset.")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    args.device = args.device or ("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if not smoke and not args.device.startswith("cuda"):
        print("No CUDA device: run with --cpu-smoke for the reduced CPU form.", file=sys.stderr)
        return 2
    cfg = TINY if smoke else QWEN25_MATH_15B
    dtype = resolve_dtype(args.dtype or ("float32" if smoke else "bfloat16"))
    args.batch = args.batch or (4 if smoke else 32)
    args.new_tokens = args.new_tokens or (8 if smoke else 256)
    args.prompt_tokens = 16 if smoke else 128
    args.steer_tokens = 8 if smoke else 64
    args.cross_batch, args.cross_tokens = (2, 6) if smoke else (8, 64)
    args.cache_rollouts, args.cache_tokens, args.cache_batch = (4, 32, 4) if smoke else (64, 512, 32)
    args.cache_dtype = "bfloat16"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    check = Check()
    t0 = time.perf_counter()
    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    tok = word_tokenizer(cfg["vocab_size"])
    (base, post), t_build = timed(lambda: (build_model(cfg, dtype, args.device, 0), build_model(cfg, dtype, args.device, 1)), args.device)
    site = f"resid_post.{int(0.4 * cfg['num_hidden_layers'])}"
    pair = ModelPair("gpu-check", "gsm8k", base, post, tok, tok, ModelSpec("synthetic"), ModelSpec("synthetic"), defaults={"site": site, "max_new_tokens": args.new_tokens})
    n_params = sum(p.numel() for p in base.parameters())
    check.phase("build", device=dev_name, torch=torch.__version__, config="tiny" if smoke else "qwen2.5-math-1.5b", params_per_model=n_params, dtype=str(dtype).removeprefix("torch."), seconds=t_build, site=site)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        phases = [
            ("cache", lambda: phase_cache(check, pair, site, args, tmp)),
            ("steering", lambda: phase_steering(check, pair, site, args)),
            ("hybrid", lambda: phase_hybrid(check, pair, site, args)),
            ("cross", lambda: phase_cross(check, pair, site, args)),
            ("preset", lambda: phase_preset(check, pair, args, tmp)),
        ]
        for name, run in phases:
            if name in skip:
                continue
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            try:
                run()
            except Exception as e:  # a crash is a failed check; the other phases still run
                check.failures.append(f"{name}: {type(e).__name__}: {e}")
                print(f"[{name}] CRASHED: {type(e).__name__}: {e}", flush=True)
    check.summary["total_seconds"] = time.perf_counter() - t0
    check.summary["failures"] = check.failures
    line = json.dumps(check.summary, default=str)
    if args.out:
        Path(args.out).write_text(line + "\n", encoding="utf-8")
    print("GPU_CHECK " + line, flush=True)
    print("gpu_check: " + ("FAILED: " + "; ".join(check.failures) if check.failures else "all checks passed"), flush=True)
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
