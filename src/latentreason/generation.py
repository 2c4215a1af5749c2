"""Batched, KV-cached decoding: the one decode loop every stage uses.

``decode`` runs one forward per generated token on a batch of left-padded prompts.
An ``on_step`` callback sees each step before the forward (the hybrid engine and
per-step steering schedules hook in there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)
LEARNED_POSITIONS = ("gpt2",)  # architectures whose position table ends at the window (rotary ones degrade past it instead)


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


class KVStepper:
    """One model's incremental forward state (KV cache, attention mask, positions) over a left-padded batch.

    ``prefill()`` runs the prompt; each ``step(tokens)`` feeds one new token per row. Used by
    :func:`decode` and by the hybrid engine, which runs two steppers in lockstep.
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None = None) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.input_ids = input_ids.to(self.device)
        mask = torch.ones_like(self.input_ids) if attention_mask is None else attention_mask.to(self.device)
        self.attention_mask = mask
        self.positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = self.positions[:, -1] + 1
        self.past = None

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    def feed(self, step: int, tokens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Inputs ``(input_ids, positions)`` of the next forward: the prompt at step 0, else ``tokens [batch]``."""
        if tokens is None:
            return self.input_ids, self.positions
        return tokens[:, None].to(self.device), self.next_pos[:, None].clone()

    def forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        """Run the model on ``ids`` (extending the cache); returns last-position logits ``[batch, vocab]``."""
        if self.past is not None:
            ones = torch.ones((self.batch, ids.shape[1]), dtype=self.attention_mask.dtype, device=self.device)
            self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
            self.next_pos = self.next_pos + ids.shape[1]
        res = self.model(input_ids=ids, attention_mask=self.attention_mask, position_ids=positions, past_key_values=self.past, use_cache=True)
        self.past = res.past_key_values
        return res.logits[:, -1, :]

    def rewind(self, n: int) -> None:
        """Forget the last forward's ``n`` fed tokens, so the step can be re-run (e.g. with steering)."""
        if self.past is None:
            raise ValueError("Nothing to rewind: the stepper has not run a forward yet.")
        if self.attention_mask.shape[1] == self.input_ids.shape[1]:  # rewinding the prompt: start afresh
            if n != self.input_ids.shape[1]:
                raise ValueError(f"Can only rewind the whole prompt ({self.input_ids.shape[1]} tokens), not {n}.")
            self.past = None
            return
        self.past.crop(-n)  # a negative argument removes n tokens in transformers 4.x and 5.x alike
        self.attention_mask = self.attention_mask[:, :-n]
        self.next_pos = self.next_pos - n

    @property
    def length(self) -> int:
        """Columns held in the KV cache (prompt and fed tokens, left padding included); 0 before the prompt forward."""
        return 0 if self.past is None else int(self.attention_mask.shape[1])

    def feed_tokens(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs ``(input_ids, positions)`` of a forward feeding ``tokens [batch, k]`` (k >= 1) after everything fed so far."""
        if self.past is None:
            raise ValueError("Run the prompt forward first (feed(0) then forward); feed_tokens extends a filled KV cache.")
        if tokens.ndim != 2 or tokens.shape[0] != self.batch or tokens.shape[1] < 1:
            raise ValueError(f"tokens must be [batch={self.batch}, k>=1], got {tuple(tokens.shape)}.")
        k = tokens.shape[1]
        return tokens.to(self.device), self.next_pos[:, None] + torch.arange(k, device=self.device)

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` columns of the KV cache (1 <= length <= :attr:`length`).

        Unlike :meth:`rewind` this may cut into the prompt; decoding then resumes after column
        ``length - 1`` (:meth:`feed_tokens`). Used by cross-tokenizer co-decoding to rewind a row
        to the longest prefix its re-tokenised text shares with what it was fed.
        """
        if self.past is None:
            raise ValueError("Nothing to truncate: the stepper has not run a forward yet.")
        if not 1 <= length <= self.length:
            raise ValueError(f"Can truncate the KV cache to 1..{self.length} columns, not {length}.")
        n = self.length - length
        if n == 0:
            return
        self.past.crop(-n)
        self.attention_mask = self.attention_mask[:, :length]
        self.next_pos = self.attention_mask.sum(-1)  # positions count real tokens from each row's first
        if length < self.input_ids.shape[1]:  # keep the "only the prompt is cached" test of rewind() truthful
            self.input_ids, self.positions = self.input_ids[:, :length], self.positions[:, :length]


def position_window(model) -> int | None:
    """The model's position window (``max_position_embeddings``; ``n_positions`` for GPT-2), None if its config gives none."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_window(model, prompt_lengths: Sequence[int] | Tensor, max_new_tokens: int, what: str = "prompt") -> None:
    """Refuse, before any forward, prompts that do not fit the model's position window.

    A prompt longer than the window is always refused. A prompt that fits but leaves less room
    than ``max_new_tokens`` is refused for models with learned position tables (GPT-2: they
    would index past it) and logged as a warning for rotary ones (they run on, out of range).
    """
    limit = position_window(model)
    lengths = prompt_lengths.tolist() if isinstance(prompt_lengths, Tensor) else list(prompt_lengths)
    if limit is None or not lengths:
        return
    longest = max(int(n) for n in lengths)
    if longest > limit:
        raise ValueError(
            f"A {what} of {longest} tokens is longer than the model's position window ({limit} tokens, max_position_embeddings). "
            f"Shorten it (the prompt template included) to at most {limit - 1} tokens, or use a model with a longer window."
        )
    need = longest + max(max_new_tokens, 1) - 1  # the last sampled token is never fed back
    if need > limit:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        msg = (
            f"A {what} of {longest} tokens plus max_new_tokens={max_new_tokens} needs {need} positions, "
            f"but the model's window is {limit} (max_position_embeddings)"
        )
        if model_type in LEARNED_POSITIONS:
            raise ValueError(f"{msg}. Lower max_new_tokens to at most {limit - longest + 1}, or shorten the prompt.")
        log.warning("%s; tokens past the window are out of the range the model was trained on.", msg)


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
    stepper = KVStepper(model, input_ids, attention_mask)
    check_window(model, stepper.attention_mask.sum(-1), max_new_tokens)
    device, batch = stepper.device, stepper.batch
    generator = make_generator(temperature, seed, device)
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    nxt = None
    for step in range(max_new_tokens):
        feed, feed_pos = stepper.feed(step, nxt)
        if on_step is not None:
            on_step(StepState(step, feed, feed_pos, ~finished))
        logits = stepper.forward(feed, feed_pos)
        nxt = sample_next(logits, temperature, generator)
        nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
        out[:, step] = nxt
        lengths += (~finished).long()
        finished |= nxt == eos_token_id
        if bool(finished.all()):
            out = out[:, : step + 1]
            break
    return DecodeResult(stepper.input_ids, out, lengths, finished)


def make_generator(temperature: float, seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A seeded generator for sampling (None for greedy decoding)."""
    if temperature <= 0:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else seed)
    return g
