"""Test helpers: tiny random-weight pairs whose base and post-RL models tokenize differently.

Two byte-level BPE tokenizers are trained (``tokenizers``) on GSM8K questions, from the copy in
``shared/data`` beside the repository when it is there, else on generated questions; they differ
in vocabulary size, special tokens and their ids, and in whether a BOS is added. The base model
is a Qwen2, the post-RL model a Llama of another width, as for real pairs (random weights).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@lru_cache(maxsize=1)
def gsm8k_rows(n: int = 80) -> tuple[dict, ...]:
    """``n`` GSM8K rows (hub schema): the first of the shared copy, else generated word problems."""
    path = SHARED_DATA / "gsm8k" / "test.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(n))]
        if len(rows) == n:
            return tuple(rows)
    rng = random.Random(0)
    names = ["Ann", "Bo", "Cy", "Dee", "Eve", "Finn", "Gus", "Hal"]
    things = ["apples", "eggs", "books", "pens", "cards", "coins"]
    rows = []
    for i in range(n):
        a, b, c = rng.randint(2, 60), rng.randint(2, 30), rng.randint(2, 9)
        who, what = names[i % len(names)], things[i % len(things)]
        q = f"{who} has {a} {what} and buys {b} more each day for {c} days. How many {what} does {who} have now? (#{i})"
        rows.append({"question": q, "answer": f"{who} buys {b} * {c} = <<{b}*{c}={b * c}>>{b * c}.\nSo {a} + {b * c} = {a + b * c}.\n#### {a + b * c}"})
    return tuple(rows)


@lru_cache(maxsize=1)
def math500_rows(n: int = 80) -> tuple[dict, ...]:
    """``n`` MATH-500 rows (hub schema): the first of the shared copy, else generated algebra problems."""
    path = SHARED_DATA / "math500" / "test.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line, _ in zip(f, range(n))]
        if len(rows) == n:
            return tuple(rows)
    rng = random.Random(1)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 20), rng.randint(1, 50)
        rows.append({"problem": f"Solve for $x$: ${a}x = {a * b}$. (#{i})", "solution": f"Divide by {a}: $x = \\boxed{{{b}}}$.", "answer": str(b), "subject": "Algebra", "level": 1 + i % 5})
    return tuple(rows)


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def corpus() -> list[str]:
    rows = gsm8k_rows()
    return [r["question"] for r in rows] + [r["answer"] for r in rows] + [r["problem"] + " " + r["solution"] for r in math500_rows()]


def bpe_tokenizer(vocab_size: int, specials: list[str], *, bos: str | None, eos: str, pad: str, chat_template: str | None = None):
    """A byte-level BPE tokenizer trained on the corpus: every byte is a token, so any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus(), trainer)
    if bos is not None:
        tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tk.token_to_id(bos))])
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad)
    if chat_template:
        tok.chat_template = chat_template
    return tok


BASE_SPECIALS = ["<pad>", "<s>", "</s>"]  # pad 0, bos 1, eos 2
POST_SPECIALS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"]  # eos 0, pad 1, no bos
CHAT_TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def base_tokenizer():
    return bpe_tokenizer(400, BASE_SPECIALS, bos="<s>", eos="</s>", pad="<pad>")


def post_rl_tokenizer():
    return bpe_tokenizer(700, POST_SPECIALS, bos=None, eos="<|endoftext|>", pad="<|pad|>", chat_template=CHAT_TEMPLATE)


def model_for(tok, arch: str, *, hidden: int, layers: int, seed: int, max_positions: int = 1024):
    """A random-weight Qwen2 or Llama whose vocabulary and special ids are ``tok``'s."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    kw = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    model = Qwen2ForCausalLM(Qwen2Config(**kw)) if arch == "qwen2" else LlamaForCausalLM(LlamaConfig(**kw))
    return model.eval()


def save_pair(root: Path) -> Path:
    """``root/models/{base,post_rl}``: a Qwen2 base and a Llama post-RL model with different tokenizers."""
    for role, tok, arch, hidden, layers, seed in (("base", base_tokenizer(), "qwen2", 32, 4, 0), ("post_rl", post_rl_tokenizer(), "llama", 48, 3, 1)):
        d = root / "models" / role
        model_for(tok, arch, hidden=hidden, layers=layers, seed=seed).save_pretrained(d)
        tok.save_pretrained(d)
    return root


PRESET = """
name = "tiny-xtok"
task = "{task}"

[base]
model = "models/base"
prompt_template = "Question: {{prompt}}\\nAnswer: Let's think step by step.\\n"

[post_rl]
model = "models/post_rl"
prompt_template = "{{prompt}}\\nPut your final answer within \\\\boxed{{{{}}}}."
chat_template = true

[defaults]
sites = ["resid_post@0.5"]
dtype = "float32"
max_new_tokens = 16
"""


def write_preset(root: Path, task: str = "gsm8k") -> Path:
    p = root / f"tiny-{task}.toml"
    p.write_text(PRESET.format(task=task), encoding="utf-8")
    return p
