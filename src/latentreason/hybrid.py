"""The hybrid engine: the base model generates; a router reading the post-RL model decides
at which tokens to add which strategy vector to the base model's residual stream.

Both models decode in lockstep over the same text, batched, each with its own KV cache:
one forward of each per generated token (an oracle router adds a second base forward at
the tokens where it steers). The base model's token is appended to both sequences; when the
tokenizers differ, the post-RL model reads the same text re-tokenised (``latentreason.xtok``).
Every step is recorded: the router's decision, hence the vector, and alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from latentreason.generation import KVStepper, check_window, left_pad, make_generator, sample_next
from latentreason.hooks import hooked
from latentreason.pair import ModelPair
from latentreason.routers import NONE, RouteContext
from latentreason.sites import HookSite, resolve
from latentreason.vectors import SteeringVector


class Router(Protocol):
    is_oracle: bool
    needs_logits: bool
    site: str
    strategies: list[str]

    def predict(self, X: Tensor, ctx: RouteContext | None = None) -> Tensor: ...


@dataclass
class HybridResult:
    """Generations of the steered base model with a per-token record.

    ``decisions[b, t]`` is the index into ``vector_names`` of the vector added at the token
    that produced generated token ``t`` (``-1``: none). ``t = 0`` is the last prompt token.
    """

    tokens: Tensor  # [batch, n_new]
    lengths: Tensor  # [batch]
    decisions: Tensor  # [batch, n_new]
    vector_names: list[str]
    alpha: float
    router: str
    is_oracle: bool
    completions: list[str] = field(default_factory=list)

    @property
    def steered_tokens(self) -> int:
        return int(sum((self.decisions[b, : n] != NONE).sum() for b, n in enumerate(self.lengths.tolist())))

    @property
    def generated_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def budget(self) -> float:
        """Share of generated tokens at which a vector was injected."""
        return self.steered_tokens / max(1, self.generated_tokens)

    def row_budget(self) -> list[float]:
        return [float((self.decisions[b, :n] != NONE).sum()) / max(1, n) for b, n in enumerate(self.lengths.tolist())]

    def pieces(self, row: int, tokenizer) -> list[str]:
        """The text of each generated token of ``row`` (for highlighting steered tokens)."""
        n = int(self.lengths[row])
        return [tokenizer.decode([t], skip_special_tokens=True) for t in self.tokens[row, :n].tolist()]

    def steered(self, row: int) -> list[tuple[int, str]]:
        """``(generated token index, vector name)`` for each steered token of ``row``."""
        n = int(self.lengths[row])
        return [(t, self.vector_names[int(k)]) for t, k in enumerate(self.decisions[row, :n].tolist()) if k != NONE]


def base_stepper(pair: ModelPair, prompts: list[str]) -> KVStepper:
    """A KV stepper of the base model on its formatted, left-padded prompts."""
    tok = pair.base_tokenizer
    ids, mask = left_pad([tok(pair.format_prompt("base", p)).input_ids for p in prompts], tok.pad_token_id)
    return KVStepper(pair.base_model, ids, mask)


def decode_buffers(batch: int, max_new_tokens: int, pad_token_id: int, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(tokens, decisions, finished, lengths)`` of a hybrid decode: all pad, all NONE, none finished, zero lengths."""
    out = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    decisions = torch.full((batch, max_new_tokens), NONE, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    return out, decisions, finished, lengths


class HybridEngine:
    """Co-decode a pair: ``router`` reads the post-RL model at ``router.site``, vectors act on the base model.

    Args:
        vectors: one per router strategy, in the router's strategy order (controls pass other
            vectors of the same length: random, swapped, bias-only).
        alpha: strength; the added vector is ``alpha * vector.direction``.
        force: optional fixed decision for every token (e.g. ``0`` = vector 0 everywhere).

    Example:
        >>> # engine = HybridEngine(pair, vectors, router, alpha=4.0)
        >>> # result = engine.generate(prompts, max_new_tokens=128)
    """

    def __init__(self, pair: ModelPair, vectors: Sequence[SteeringVector], router: Router, *, alpha: float, check: bool = True, force: int | None = None) -> None:
        try:
            self.alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha={alpha!r} is not a number.") from None
        if len(vectors) != len(router.strategies):
            raise ValueError(f"{len(vectors)} vectors for a router with {len(router.strategies)} strategies ({router.strategies}): give one vector per strategy, in order.")
        sites = {str(v.site) for v in vectors}
        if len(sites) != 1:
            raise ValueError(f"All vectors must act at one site; got {sorted(sites)}.")
        if check:
            fp = pair.fingerprint("base")
            for v in vectors:
                v.check_model(pair.base_model, fp)
            if hasattr(router, "check_model"):
                router.check_model(router.site, pair.fingerprint("post_rl"))
            elif hasattr(router, "inner") and hasattr(router.inner, "check_model"):
                router.inner.check_model(router.site, pair.fingerprint("post_rl"))
        resolve(pair.post_rl_model, router.site)  # an unknown site or layer raises here, before generating
        self.pair = pair
        self.vectors = list(vectors)
        self.router = router
        self.force = force
        self.site = HookSite.parse(next(iter(sites)))
        self.router_site = HookSite.parse(router.site)
        from latentreason.xtok import feeding_mode

        self.feeding = feeding_mode(pair)  # "ids": both read base token ids (batched); "text": the post-RL model re-tokenises (xtok)
        self._table = torch.stack([v.direction.float() for v in vectors])  # [K, d]

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0, batch_size: int = 256) -> HybridResult:
        """Hybrid generations for task prompts (each model's template is applied by the pair)."""
        parts = [self._generate(prompts[i : i + batch_size], max_new_tokens, temperature, seed + i) for i in range(0, len(prompts), batch_size)]
        width = max(p.tokens.shape[1] for p in parts)
        pad = self.pair.base_tokenizer.pad_token_id

        def cat(name: str, fill: int) -> Tensor:
            return torch.cat([torch.nn.functional.pad(getattr(p, name), (0, width - getattr(p, name).shape[1]), value=fill) for p in parts])

        return HybridResult(
            cat("tokens", pad), torch.cat([p.lengths for p in parts]), cat("decisions", NONE),
            [v.name for v in self.vectors], self.alpha, type(self.router).__name__, self.router.is_oracle,
            [c for p in parts for c in p.completions],
        )

    def _generate(self, prompts: list[str], max_new_tokens: int, temperature: float, seed: int) -> HybridResult:
        if self.feeding == "text":  # tokenizers differ: the post-RL model follows the base text (latentreason.xtok)
            from latentreason.xtok import cross_generate

            return cross_generate(self, prompts, max_new_tokens, temperature, seed)
        pair, tok, post_tok = self.pair, self.pair.base_tokenizer, self.pair.post_rl_tokenizer
        base = base_stepper(pair, prompts)
        post_pad = post_tok.pad_token_id if post_tok.pad_token_id is not None else tok.pad_token_id  # masked: any id will do
        post_ids, post_mask = left_pad([post_tok(pair.format_prompt("post_rl", p)).input_ids for p in prompts], post_pad)
        post = KVStepper(pair.post_rl_model, post_ids, post_mask)
        check_window(base.model, base.attention_mask.sum(-1), max_new_tokens, "base-model prompt")
        check_window(post.model, post.attention_mask.sum(-1), max_new_tokens, "post-RL prompt")
        dev = base.device
        table = self._table.to(dev)
        batch = len(prompts)
        gen = make_generator(temperature, seed, dev)
        out, decisions, finished, lengths = decode_buffers(batch, max_new_tokens, tok.pad_token_id, dev)
        steer_rows = torch.cat([torch.zeros((1, table.shape[1]), device=dev), self.alpha * table])  # row 0: no vector
        none_col = torch.full((batch,), NONE, dtype=torch.long, device=dev)
        pad_col = torch.full((batch,), tok.pad_token_id, dtype=torch.long, device=dev)
        delta: list[Tensor | None] = [None]  # [batch, 1, d] added at the current token, or None

        def add(h: Tensor) -> Tensor | None:  # h: [batch, n, d]; steer the last position only, never in place
            d = delta[0]
            if d is None:
                return None
            return h + d.to(h.dtype) if h.shape[1] == 1 else torch.cat([h[:, :-1], h[:, -1:] + d.to(h.dtype)], dim=1)

        last: list[Tensor] = []

        def keep(h: Tensor) -> None:  # post-RL activation at the current token: [batch, d]
            last[:] = [h[:, -1, :]]

        nxt = None
        # hooks stay registered for the whole loop (cheaper than per step) and are removed on exit
        with hooked(post.model, [(self.router_site, keep)]), hooked(base.model, [(self.site, add)]):
            for step in range(max_new_tokens):
                ids_p, pos_p = post.feed(step, nxt)
                post_logits = post.forward(ids_p, pos_p)
                ids_b, pos_b = base.feed(step, nxt)
                base_logits = None
                delta[0] = None
                if self.router.needs_logits:
                    base_logits = base.forward(ids_b, pos_b)
                    base.rewind(ids_b.shape[1])
                if self.force is not None:
                    dec = torch.full((batch,), self.force, dtype=torch.long, device=dev)
                else:
                    dec = self.router.predict(last[0], RouteContext(step, base_logits, post_logits)).to(dev)
                dec = torch.where(finished, none_col, dec)
                if bool((dec != NONE).any()):
                    delta[0] = steer_rows[dec + 1][:, None, :]  # one gather: rows with NONE get the zero row
                logits = base.forward(ids_b, pos_b)
                nxt = sample_next(logits, temperature, gen)
                nxt = torch.where(finished, pad_col, nxt)
                out[:, step] = nxt
                decisions[:, step] = dec
                lengths += (~finished).long()
                finished |= nxt == tok.eos_token_id
                if bool(finished.all()):
                    out, decisions = out[:, : step + 1], decisions[:, : step + 1]
                    break
        completions = [tok.decode(r[:n].tolist(), skip_special_tokens=True) for r, n in zip(out, lengths)]
        return HybridResult(out.cpu(), lengths.cpu(), decisions.cpu(), [v.name for v in self.vectors], self.alpha, type(self.router).__name__, self.router.is_oracle, completions)
