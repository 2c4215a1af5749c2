"""Batched, KV-cached decoding: the one decode loop every stage uses.

``decode`` runs one forward per generated token on a batch of left-padded prompts.
An ``on_step`` callback sees each step before the forward (the hybrid engine and
per-step steering schedules hook in there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DecodeResult:
    """Output of :func:`decode`.

    ``tokens`` is ``[batch, n_new]`` (``pad_token_id`` after a row's EOS); ``lengths`` counts
    each row's generated tokens up to and including its EOS.
    """

    prompt_ids: Tensor  # [batch, prompt_len]
    tokens: Tensor  # [batch, n_new]
    lengths: Tensor  # [batch]
    finished: Tensor  # [batch] bool: row emitted EOS

    def completions(self, tokenizer) -> list[str]:
        """Decoded generated text of each row (EOS and padding dropped)."""
        return [tokenizer.decode(row[:n].tolist(), skip_special_tokens=True) for row, n in zip(self.tokens, self.lengths)]


@dataclass
class StepState:
    """What an ``on_step`` callback sees: decoding is about to feed ``input_ids`` at ``positions``."""

    step: int  # 0 is the prompt forward
    input_ids: Tensor  # [batch, n] tokens about to be fed
    positions: Tensor  # [batch, n] absolute positions (0 = first real token of the row)
    active: Tensor  # [batch] rows not yet finished


def left_pad(batch: list[list[int]], pad_token_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Left-pad token lists into ``input_ids`` and ``attention_mask`` ``[batch, max_len]``."""
    width = max(len(r) for r in batch)
    ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def sample_next(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Greedy when ``temperature == 0``, else sample from softmax(logits / T). ``logits``: [batch, vocab]."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0.")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(
    model,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 0.0,
    seed: int | None = None,
    on_step: Callable[[StepState], None] | None = None,
) -> DecodeResult:
    """Generate up to ``max_new_tokens`` per row with a KV cache, stopping rows at EOS.

    Example:
        >>> from latentreason.organism import load_default
        >>> pair = load_default()
        >>> tok = pair.base_tokenizer
        >>> ids = tok(["  3+4="], return_tensors="pt").input_ids
        >>> out = decode(pair.base_model, ids, max_new_tokens=8, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        >>> out.tokens.shape[0]
        1
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0.")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    batch = input_ids.shape[0]
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else seed)

    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    next_pos = positions[:, -1] + 1
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    past = None
    feed, feed_pos = input_ids, positions
    for step in range(max_new_tokens):
        if on_step is not None:
            on_step(StepState(step, feed, feed_pos, ~finished))
        res = model(input_ids=feed, attention_mask=attention_mask, position_ids=feed_pos, past_key_values=past, use_cache=True)
        past = res.past_key_values
        nxt = sample_next(res.logits[:, -1, :], temperature, generator)
        nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
        out[:, step] = nxt
        lengths += (~finished).long()
        finished |= nxt == eos_token_id
        if bool(finished.all()):
            out = out[:, : step + 1]
            break
        feed = nxt[:, None]
        feed_pos = next_pos[:, None].clone()
        next_pos = next_pos + 1
        attention_mask = torch.cat([attention_mask, torch.ones((batch, 1), dtype=attention_mask.dtype, device=device)], dim=1)
    return DecodeResult(input_ids, out, lengths, finished)
