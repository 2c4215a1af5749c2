"""Cross-tokenizer co-decoding: the post-RL model follows the base model's *text*, tokenized its own way.

The hybrid engine decodes the base and post-RL models in lockstep. When both read the same
token ids (:func:`feeding_mode` is ``"ids"``: the same vocabulary, or a compatible one such as
Qwen2.5 and its R1 distill, which differ only in added special tokens), the base model's token
id is fed to both, batched. Otherwise (``"text"``) the post-RL model cannot read base ids, and
:func:`cross_generate` makes it follow the base model's text instead, after every base token:

1. decode the base completion so far *as a whole* (never token by token: a byte-level token can
   hold part of a UTF-8 character); an incomplete character at the end (U+FFFD) is held back
   until the base model completes it (:func:`completion_text`);
2. tokenize it as the activation cache does: the formatted prompt with special tokens, then the
   completion without, with the post-RL tokenizer;
3. keep the longest common prefix with the ids the post-RL model was already fed, crop its KV
   cache to that prefix and feed the rest (:class:`TextFollower`);
4. the router reads the post-RL activation at the last fed token; the base model steps as in
   the batched engine (its steering hook and sampling are the same code path).

Cost. The base model stays batched. The post-RL side is per row: each row has its own KV cache
and batch-1 forwards, because rows rewind by different amounts; a row whose tokenization did not
change (a held-back byte) costs no forward. Re-tokenising decodes and encodes the whole
completion at every step, so tokenizer work grows as O(T^2) per row for T generated tokens
(Rust tokenizers: negligible below ~2k tokens, seconds per row at ~8k). On a GPU the batch-1
forwards dominate: expect the post-RL side to cost about ``batch`` times a batched step, i.e. use
this path when the vocabularies really differ, and the batched ``"ids"`` path otherwise.

The oracle router's "next tokens disagree" gate reads both models' logits; across vocabularies
the post-RL model's greedy next token is mapped to text (in context) and re-read as the base
model's first token of that text; ``RouteContext.post_rl_logits`` is that point mass over the
base vocabulary (see :func:`project_next_token`).

Example:
    >>> completion_text(_ByteTok(), [0xC3])  # an incomplete UTF-8 character is held back
    ''
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from latentreason.generation import KVStepper, check_window, make_generator, sample_next
from latentreason.hooks import hooked
from latentreason.routers import NONE, RouteContext
from latentreason.sites import HookSite

if TYPE_CHECKING:
    from latentreason.hybrid import HybridEngine, HybridResult
    from latentreason.pair import ModelPair

log = logging.getLogger(__name__)

SAME, COMPATIBLE, DIFFERENT = "same", "compatible", "different"
REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) a whole UTF-8 character


# ------------------------------------------------------------------ vocabularies


def vocab_relation(base_tokenizer, post_rl_tokenizer) -> str:
    """How two tokenizers relate: ``"same"`` vocabulary, ``"compatible"`` or ``"different"``.

    Compatible: the same regular (non-added) vocabulary, the same decoder, and every added token
    of the base tokenizer that is not special means the same in the post-RL one. Then a base
    token id is the same text for the post-RL model (special tokens may differ, e.g. a chat
    model's turn markers: the base model's EOS ends its row, and other specials are dropped
    from completions).
    """
    if base_tokenizer.get_vocab() == post_rl_tokenizer.get_vocab():
        return SAME
    b, p = getattr(base_tokenizer, "backend_tokenizer", None), getattr(post_rl_tokenizer, "backend_tokenizer", None)
    if b is None or p is None:
        return DIFFERENT
    if b.get_vocab(with_added_tokens=False) != p.get_vocab(with_added_tokens=False):
        return DIFFERENT
    if _decoder_json(b) != _decoder_json(p):
        return DIFFERENT
    post_added = {i: t.content for i, t in p.get_added_tokens_decoder().items()}
    post_vocab = p.get_vocab(with_added_tokens=True)
    for i, t in b.get_added_tokens_decoder().items():
        if t.special:
            continue
        if post_added.get(i, None) != t.content and post_vocab.get(t.content) != i:
            return DIFFERENT
    return COMPATIBLE


def _decoder_json(backend) -> str:
    return json.dumps(json.loads(backend.to_str()).get("decoder"), sort_keys=True)


def feeding_mode(pair: ModelPair) -> str:
    """``"ids"`` when the post-RL model can read the base model's token ids (same or compatible vocabulary
    and an embedding table that holds them), else ``"text"`` (re-tokenised co-decoding)."""
    rel = vocab_relation(pair.base_tokenizer, pair.post_rl_tokenizer)
    if rel == DIFFERENT:
        return "text"
    emb = pair.post_rl_model.get_input_embeddings()
    n_rows = getattr(emb, "num_embeddings", None)
    top = max(pair.base_tokenizer.get_vocab().values())
    if n_rows is not None and top >= n_rows:
        log.info("base token ids reach %d but the post-RL embedding has %d rows: re-tokenising text instead", top, n_rows)
        return "text"
    if rel == COMPATIBLE:
        log.info("base and post-RL tokenizers differ only in special tokens: feeding base token ids to both models")
    return "ids"


# ------------------------------------------------------------------ text


def completion_text(tokenizer, ids: Sequence[int]) -> str:
    """The text of generated token ids, decoded as a whole, special tokens dropped, with an incomplete
    trailing character (decoded as U+FFFD) held back until the tokens that complete it arrive."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    return text.rstrip(REPLACEMENT)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_ids(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each text, as ``tokenizer(texts)`` gives them (through the Rust tokenizer when that is safe)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
    return [list(x) for x in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]


# ------------------------------------------------------------------ the post-RL side


@dataclass
class FollowStats:
    """What following the base text cost the post-RL model."""

    forwards: int = 0  # batch-1 forwards (prompts included)
    fed_tokens: int = 0  # tokens fed after the prompts
    rewound_tokens: int = 0  # tokens cropped from KV caches because re-tokenisation changed them
    reused_steps: int = 0  # row-steps whose tokenization did not change (no forward)

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class TextFollower:
    """The post-RL model reading ``prompt + text`` per row, re-tokenised after every base token.

    Each row has its own :class:`~latentreason.generation.KVStepper` (batch 1) and the ids it was
    fed (``fed[row]``: prompt ids, then completion ids); ``acts [batch, d_model]`` holds the
    activation at ``site`` at each row's last fed token, ``next_id(row)`` the model's greedy next token there.

    Args:
        prompts: the post-RL model's formatted prompts (template applied).
    """

    def __init__(self, model, tokenizer, prompts: Sequence[str], site: str | HookSite) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.site = HookSite.parse(site)
        self.prompt_ids = encode_ids(tokenizer, list(prompts), add_special_tokens=True)
        for i, p in enumerate(self.prompt_ids):
            if not p:
                raise ValueError(f"Prompt {i} tokenizes to nothing for the post-RL model; the router needs a prompt token to read.")
        self.fed: list[list[int]] = [list(p) for p in self.prompt_ids]
        self.steppers: list[KVStepper | None] = [None] * len(self.prompt_ids)
        self.acts: Tensor | None = None  # [batch, d_model]
        self._next: list[Tensor | None] = [None] * len(self.prompt_ids)  # greedy next token, left on the device (no sync per row)
        self.stats = FollowStats()
        self._last: list[Tensor] = []

    @property
    def batch(self) -> int:
        return len(self.prompt_ids)

    def hook(self) -> tuple[HookSite, Callable[[Tensor], None]]:
        """The ``(site, fn)`` that records the activation at the last fed position; register it around every forward."""

        def keep(h: Tensor) -> None:  # h: [1, n, d]
            self._last[:] = [h[:, -1, :]]

        return self.site, keep

    def prefill(self) -> None:
        """Run every row's prompt."""
        for r in range(self.batch):
            ids = torch.tensor([self.prompt_ids[r]], dtype=torch.long)
            st = KVStepper(self.model, ids)
            self.steppers[r] = st
            self._record(r, st.forward(*st.feed(0)))
            self.stats.forwards += 1

    def follow(self, rows: Sequence[int], texts: Sequence[str]) -> None:
        """Bring each of ``rows`` to ``prompt + texts[i]`` (its completion so far), feeding only what changed."""
        for r, comp in zip(rows, encode_ids(self.tokenizer, list(texts), add_special_tokens=False)):
            target = self.prompt_ids[r] + list(comp)
            fed = self.fed[r]
            n = common_prefix(fed, target)
            if n == len(fed) == len(target):
                self.stats.reused_steps += 1
                continue
            keep = min(n, len(target) - 1)  # feed at least one token, so the activation is the last token's
            st = self.steppers[r]
            if st is None:
                raise ValueError("TextFollower.follow before prefill(): run the prompts first.")
            self.stats.rewound_tokens += len(fed) - keep
            st.truncate(keep)
            new = torch.tensor([target[keep:]], dtype=torch.long)
            self._record(r, st.forward(*st.feed_tokens(new)))
            self.stats.forwards += 1
            self.stats.fed_tokens += len(target) - keep
            self.fed[r] = target

    def _record(self, r: int, logits: Tensor) -> None:
        if not self._last:
            raise RuntimeError(f"No activation was recorded at {self.site}: call follow/prefill inside `with hooked(model, [follower.hook()])`.")
        h = self._last[0][0].detach()
        if self.acts is None:
            self.acts = torch.zeros((self.batch, h.shape[-1]), dtype=h.dtype, device=h.device)
        self.acts[r] = h
        self._next[r] = logits[0].argmax()
        self._last.clear()

    def next_id(self, r: int) -> int:
        """The post-RL model's greedy next token after row ``r``'s last fed token."""
        if self._next[r] is None:
            raise ValueError("TextFollower.next_id before prefill(): run the prompts first.")
        return int(self._next[r])

    def completion_ids(self, r: int) -> list[int]:
        return self.fed[r][len(self.prompt_ids[r]) :]


def project_next_token(follower: TextFollower, rows: Sequence[int], base_tokenizer, vocab_size: int, device, base_eos: int | None) -> Tensor:
    """The post-RL model's greedy next token of each row, read as a base token: ``[batch, vocab_size]``, 0 at that token, -inf elsewhere.

    The next token's text is taken in context (decode of fed completion + token, minus decode of
    the fed completion), and mapped to the base tokenizer's first token of that text. EOS maps to
    the base EOS. Rows whose next text is empty map to nothing (all -inf; the oracle then sees a
    disagreement only if the base argmax differs from index 0, so such rows are filled with the
    base argmax by the caller).
    """
    tok = follower.tokenizer
    out = torch.full((follower.batch, vocab_size), float("-inf"), device=device)
    post_eos = getattr(tok, "eos_token_id", None)
    for r in rows:
        g = follower.next_id(r)
        if g == post_eos and base_eos is not None:
            out[r, base_eos] = 0.0
            continue
        comp = follower.completion_ids(r)
        before = tok.decode(comp, skip_special_tokens=True)
        after = tok.decode(comp + [g], skip_special_tokens=True)
        text = after[len(before) :] if after.startswith(before) else tok.decode([g], skip_special_tokens=True)
        ids = encode_ids(base_tokenizer, [text], add_special_tokens=False)[0] if text else []
        if ids and ids[0] < vocab_size:
            out[r, ids[0]] = 0.0
    return out


# ------------------------------------------------------------------ the co-decoding loop


@dataclass
class CrossStep:
    """What :func:`cross_generate`'s ``on_step`` sees after the router decided, before the base forward."""

    step: int
    fed: list[list[int]]  # post-RL ids fed so far, per row (prompt + completion)
    texts: list[str]  # base completion text each row's post-RL model has read (held-back characters excluded)
    acts: Tensor  # [batch, d_model] router input
    decisions: Tensor  # [batch]
    active: Tensor  # [batch] rows not yet finished


@dataclass
class CrossResult:
    """Extra record of a cross-tokenizer run (the :class:`~latentreason.hybrid.HybridResult` is ``result``)."""

    result: HybridResult
    post_rl_ids: list[list[int]]  # the post-RL ids each row was fed last (prompt + completion)
    stats: FollowStats = field(default_factory=FollowStats)


@torch.no_grad()
def cross_generate(
    engine: HybridEngine,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    on_step: Callable[[CrossStep], None] | None = None,
    details: bool = False,
) -> HybridResult | CrossResult:
    """Hybrid generations for a pair whose tokenizers differ (what ``HybridEngine.generate`` runs then).

    The base model decodes a batch with its KV cache and steering hook exactly as in the batched
    engine; a :class:`TextFollower` keeps the post-RL model on the same text. ``details=True``
    returns a :class:`CrossResult` with the post-RL ids and costs.
    """
    from latentreason.hybrid import HybridResult, base_stepper, decode_buffers

    pair = engine.pair
    tok, post_tok = pair.base_tokenizer, pair.post_rl_tokenizer
    base = base_stepper(pair, prompts)
    check_window(base.model, base.attention_mask.sum(-1), max_new_tokens, "base-model prompt")
    follower = TextFollower(pair.post_rl_model, post_tok, [pair.format_prompt("post_rl", p) for p in prompts], engine.router_site)
    check_window(pair.post_rl_model, [len(ids) for ids in follower.prompt_ids], max_new_tokens, "post-RL prompt")
    dev = base.device
    table = engine._table.to(dev)
    batch = len(prompts)
    gen = make_generator(temperature, seed, dev)
    out, decisions, finished, lengths = decode_buffers(batch, max_new_tokens, tok.pad_token_id, dev)
    delta = torch.zeros((batch, table.shape[1]), device=dev)
    texts = [""] * batch
    generated: list[list[int]] = [[] for _ in range(batch)]  # base ids per row, kept on the host (one transfer per step)
    active = [False]

    def add(h: Tensor) -> Tensor | None:  # h: [batch, n, d]; steer the last position only, never in place
        if not active[0]:
            return None
        d = delta.to(h.dtype)[:, None, :]
        return h + d if h.shape[1] == 1 else torch.cat([h[:, :-1], h[:, -1:] + d], dim=1)

    nxt = None
    router = engine.router
    with hooked(follower.model, [follower.hook()]), hooked(base.model, [(engine.site, add)]):
        for step in range(max_new_tokens):
            live = [r for r, done in enumerate(finished.tolist()) if not done]
            if step == 0:
                follower.prefill()
            else:
                texts_now = [completion_text(tok, generated[r]) for r in live]
                for r, t in zip(live, texts_now):
                    texts[r] = t
                follower.follow(live, texts_now)
            ids_b, pos_b = base.feed(step, nxt)
            base_logits = None
            active[0] = False
            if router.needs_logits:
                base_logits = base.forward(ids_b, pos_b)
                base.rewind(ids_b.shape[1])
            if engine.force is not None:
                dec = torch.full((batch,), engine.force, dtype=torch.long, device=dev)
            else:
                post_logits = None
                if router.needs_logits:
                    post_logits = project_next_token(follower, live, tok, base_logits.shape[-1], dev, tok.eos_token_id)
                    empty = torch.isinf(post_logits).all(-1)
                    if bool(empty.any()):  # no text to compare: count as agreement
                        post_logits[empty, base_logits[empty].argmax(-1)] = 0.0
                dec = router.predict(follower.acts, RouteContext(step, base_logits, post_logits)).to(dev)
            dec = torch.where(finished, torch.full_like(dec, NONE), dec)
            if on_step is not None:
                on_step(CrossStep(step, [list(f) for f in follower.fed], list(texts), follower.acts.clone(), dec.clone(), ~finished))
            steer = dec != NONE
            active[0] = bool(steer.any())
            if active[0]:
                delta.zero_()
                delta[steer] = engine.alpha * table[dec[steer]]
            logits = base.forward(ids_b, pos_b)
            nxt = sample_next(logits, temperature, gen)
            nxt = torch.where(finished, torch.full_like(nxt, tok.pad_token_id), nxt)
            out[:, step] = nxt
            decisions[:, step] = dec
            for r, t in zip(live, nxt[live].tolist() if live else []):
                generated[r].append(t)
            lengths += (~finished).long()
            finished |= nxt == tok.eos_token_id
            if bool(finished.all()):
                out, decisions = out[:, : step + 1], decisions[:, : step + 1]
                break
    log.debug("cross-tokenizer co-decoding: %s", follower.stats.to_dict())
    completions = [tok.decode(r[:n].tolist(), skip_special_tokens=True) for r, n in zip(out, lengths)]
    res = HybridResult(out.cpu(), lengths.cpu(), decisions.cpu(), [v.name for v in engine.vectors], engine.alpha, type(router).__name__, router.is_oracle, completions)
    if details:
        return CrossResult(res, [list(f) for f in follower.fed], follower.stats)
    return res


class _ByteTok:
    """A stand-in tokenizer for the doctest: ids are bytes."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")
