"""Steering: add :class:`~latentreason.vectors.SteeringVector` s to a model's activations while it generates.

*Where* a vector acts is a :class:`Schedule`, written in one of two coordinates:

* **position** — the absolute position of a token among its row's real tokens (0 = the row's
  first real token; left padding is not counted). Steering position ``p`` edits the
  activation of the token *at* ``p``, so it changes the tokens predicted from ``p`` on.
* **step** — generation step ``k`` is the forward pass that decides generated token ``k``
  (step 0 is the prompt forward). Steering step ``k`` edits the row's position
  ``prompt_len - 1 + k``; ``first`` (step 0) is the last prompt token.

The hook tracks positions itself: the first forward inside the context is the prompt (width
``T``, left-padded as ``attention_mask`` says); a later forward appends its tokens (KV cache),
or, when it is wider than everything seen so far, re-feeds the whole sequence (no cache) and
already-seen positions are steered exactly as before. One generation per context (or call
:meth:`Steering.reset` between generations). The edit is ``hidden + alpha * direction`` at the
selected ``[row, position]`` entries only, never in place.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

from latentreason.fingerprint import hidden_size_of, model_fingerprint
from latentreason.generation import DecodeResult, decode
from latentreason.hooks import hooked
from latentreason.vectors import SteeringVector

# fn(step, positions [batch, n] (negative = padding), hidden [batch, n, d_model]) -> bool [batch, n] | bool | None
StepCallback = Callable[[int, Tensor, Tensor], Union[Tensor, bool, None]]
ScheduleLike = Union[str, "Schedule", Sequence[int], Sequence[Sequence[int]], Tensor, StepCallback]
VectorSpec = Union[tuple[SteeringVector, float], tuple[SteeringVector, float, ScheduleLike]]

SCHEDULE_HELP = (
    "use 'all', 'prompt', 'generated', 'first', 'positions 3,4', 'steps 0,1', a list of positions, "
    "a [batch, steps] bool mask or a callback fn(step, positions, hidden) -> [batch, n] bool mask"
)
_NAMED = re.compile(r"^(positions|steps)\s*[ =:]\s*(-?\d+(?:\s*,\s*-?\d+)*)$")


class PositionNotReachedError(ValueError):
    """An explicitly requested position or step was never part of the generated sequence."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """Where a vector acts. Build with the class methods or :meth:`parse`.

    ``steps`` and ``mask`` speak in generation steps, ``positions`` in absolute positions;
    ``callback`` decides each forward: ``fn(step, positions, hidden) -> [batch, n]`` bool.
    """

    kind: str  # all | prompt | generated | steps | positions | mask | callback
    steps: tuple[int, ...] = ()
    positions: tuple[tuple[int, ...], ...] = ()  # one tuple for every row, or one per row
    mask: Tensor | None = None  # [batch, steps] bool
    fn: StepCallback | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind in ("steps", "positions"):
            vals = self.steps if self.kind == "steps" else [p for row in self.positions for p in row]
            if not vals or any(not isinstance(v, int) or v < 0 for v in vals):
                raise ValueError(f"Schedule {self.kind} needs non-negative integers, got {self.steps or self.positions}.")
        if self.kind == "mask" and (not isinstance(self.mask, Tensor) or self.mask.ndim != 2):
            raise ValueError(f"A mask schedule needs a [batch, steps] bool tensor, got {getattr(self.mask, 'shape', type(self.mask))}.")
        if self.kind == "callback" and not callable(self.fn):
            raise ValueError("A callback schedule needs a callable fn(step, positions, hidden).")

    @classmethod
    def all(cls) -> Schedule:
        """Every real token: prompt and generated."""
        return cls("all", label="all")

    @classmethod
    def prompt(cls) -> Schedule:
        """The prompt's real tokens only."""
        return cls("prompt", label="prompt")

    @classmethod
    def generated(cls) -> Schedule:
        """Generated tokens only (positions ``>= prompt_len``; steps 1, 2, ...)."""
        return cls("generated", label="generated")

    @classmethod
    def first(cls) -> Schedule:
        """Step 0 only: the last prompt token, whose output decides the first generated token."""
        return cls("steps", steps=(0,), label="first")

    @classmethod
    def at_steps(cls, steps: Sequence[int]) -> Schedule:
        """Generation steps ``k`` (position ``prompt_len - 1 + k`` of every row)."""
        return cls("steps", steps=_ints(steps, "Steps"), label="steps " + ",".join(map(str, steps)))

    @classmethod
    def at_positions(cls, positions: Sequence[int] | Sequence[Sequence[int]]) -> Schedule:
        """Absolute positions, the same for every row (``[3, 4]``) or one list per row (``[[3], [5, 6]]``)."""
        pos = list(positions)
        if pos and all(isinstance(p, Sequence) for p in pos):
            return cls("positions", positions=tuple(_ints(row, "Positions") for row in pos), label=f"positions {pos}")
        return cls("positions", positions=(_ints(pos, "Positions"),), label="positions " + ",".join(map(str, pos)))

    @classmethod
    def from_mask(cls, mask: Tensor) -> Schedule:
        """``mask[row, k]`` steers row's step ``k``; steps past the mask's width are not steered."""
        m = torch.as_tensor(mask).bool()
        return cls("mask", mask=m, label=f"mask {tuple(m.shape)}")

    @classmethod
    def from_callback(cls, fn: StepCallback) -> Schedule:
        """``fn(step, positions, hidden)`` returns a ``[batch, n]`` bool mask (or True / None) each forward; keep it cheap."""
        return cls("callback", fn=fn, label=f"callback {getattr(fn, '__name__', type(fn).__name__)}")

    @classmethod
    def parse(cls, at: ScheduleLike) -> Schedule:
        """A :class:`Schedule` from any accepted form (see ``SCHEDULE_HELP``)."""
        if isinstance(at, Schedule):
            return at
        if isinstance(at, str):
            s = at.strip().lower()
            if s in ("all", "prompt", "generated", "first"):
                return getattr(cls, s)()
            if m := _NAMED.match(s):
                vals = [int(v) for v in m.group(2).split(",")]
                return cls.at_steps(vals) if m.group(1) == "steps" else cls.at_positions(vals)
            raise ValueError(f"Unknown schedule {at!r}: {SCHEDULE_HELP}.")
        if isinstance(at, Tensor):
            if at.dtype == torch.bool and at.ndim == 2:
                return cls.from_mask(at)
            if at.ndim == 1 and not at.is_floating_point():
                return cls.at_positions(at.tolist())
            raise ValueError(f"A tensor schedule must be a [batch, steps] bool mask or 1-D integer positions, got dtype {at.dtype} shape {tuple(at.shape)}.")
        if callable(at):
            return cls.from_callback(at)
        if isinstance(at, Sequence):
            return cls.at_positions(at)
        raise ValueError(f"Cannot use {at!r} as a schedule: {SCHEDULE_HELP}.")

    def __str__(self) -> str:
        return self.label or self.kind


def _ints(values: Sequence[Any], what: str) -> tuple[int, ...]:
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
        raise ValueError(f"{what} must be integers (or one list of integers per row), got {list(values)!r}.")
    return tuple(int(v) for v in values)


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """``alpha`` as a float; raises ``ValueError`` unless it is a finite real number."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)):
        raise ValueError(f"{name}={alpha!r} is not a finite number: pass e.g. alpha=2.0.")
    return float(alpha)


@dataclass
class _Entry:
    """One vector at run time: its precomputed edit and what it steered (new columns of each forward)."""

    vector: SteeringVector
    alpha: float
    schedule: Schedule
    delta: Tensor  # [d_model] alpha * direction, on the model's device and dtype
    history: list[tuple[int, int, Any]] = field(default_factory=list)  # (first column, n columns, True | None | bool [batch, n])
    # per prompt, from the schedule (padded column coordinates):
    step_cols: frozenset[int] = frozenset()  # steps: the deciding column of each step
    pos_cols: dict[int, Tensor] = field(default_factory=dict)  # positions: column -> [batch] bool rows
    mask: Tensor | None = None  # mask: [batch, steps] on the model's device


class _SiteHook:
    """The hook at one site: tracks column -> position and applies that site's vectors."""

    def __init__(self, steering: Steering, entries: list[_Entry]) -> None:
        self.s, self.entries = steering, entries
        self.reset()

    def reset(self) -> None:
        self.width = 0  # columns seen (padded coordinates)
        self.step = -1
        for e in self.entries:
            e.history.clear()

    def __call__(self, hidden: Tensor) -> Tensor | None:  # hidden: [batch, n, d_model]
        batch, n = hidden.shape[0], hidden.shape[1]
        s = self.s
        if self.width == 0:
            s._start(batch, n, hidden.device)
            start = new_from = 0
        else:
            if batch != s.batch:
                raise ValueError(f"The steer context saw batch size {s.batch}, then {batch}: use one `with steer(...)` per generation, or call .reset() between them.")
            start, new_from = (0, self.width) if n > self.width else (self.width, self.width)
        self.step += 1
        self.width = start + n
        out = None
        for e in self.entries:
            dec = self._decide(e, hidden, start, n, new_from)
            new = dec[:, new_from - start :] if isinstance(dec, Tensor) and new_from > start else dec
            e.history.append((new_from, start + n - new_from, new))
            if dec is None:
                continue
            base = hidden if out is None else out
            if dec is True:
                out = base + e.delta
            else:
                out = torch.addcmul(base, dec.unsqueeze(-1).to(base.dtype), e.delta)
        return out

    def _cols(self, start: int, n: int) -> Tensor:
        return torch.arange(start, start + n, device=self.s.device)

    def _decide(self, e: _Entry, hidden: Tensor, start: int, n: int, new_from: int) -> Any:
        """True (every entry), None (nothing) or a bool mask ``[batch, n]`` over the fed columns."""
        s, sch, kind = self.s, e.schedule, e.schedule.kind
        T = s.prompt_width
        if kind == "all":
            return True if (not s.any_pad or start >= T) else s.real(start, n)
        if kind == "generated":
            if start >= T:
                return True
            return None if start + n <= T else (self._cols(start, n) >= T)[None].expand(s.batch, n)
        if kind == "prompt":
            if start >= T:
                return None
            if not s.any_pad and start + n <= T:
                return True
            return s.real(start, n) & (self._cols(start, n) < T)[None]
        if kind == "steps":
            if n == 1:
                return True if start in e.step_cols else None
            hits = [c - start for c in e.step_cols if start <= c < start + n]
            if not hits:
                return None
            m = torch.zeros(n, dtype=torch.bool, device=s.device)
            m[hits] = True
            return m[None].expand(s.batch, n)
        if kind == "positions":
            if n == 1:
                rows = e.pos_cols.get(start)
                return None if rows is None else rows[:, None]
            hits = [(c, r) for c, r in e.pos_cols.items() if start <= c < start + n]
            if not hits:
                return None
            m = torch.zeros((s.batch, n), dtype=torch.bool, device=s.device)
            for c, r in hits:
                m[:, c - start] = r
            return m
        if kind == "mask":
            mask = e.mask  # [batch, steps]
            k0, k1 = max(start, T - 1) - T + 1, min(start + n - T + 1, mask.shape[1])
            if k1 <= k0:
                return None
            if n == 1:
                return mask[:, k0:k1]
            m = torch.zeros((s.batch, n), dtype=torch.bool, device=s.device)
            off = k0 + T - 1 - start
            m[:, off : off + k1 - k0] = mask[:, k0:k1]
            return m
        # callback: ask only about new columns; re-fed old columns keep their earlier decision
        n_new = start + n - new_from
        pos = (new_from - s.pad)[:, None] if n_new == 1 else self._cols(new_from, n_new)[None] - s.pad[:, None]
        r = sch.fn(self.step, pos, hidden[:, new_from - start :])
        if r is None or r is False:
            r = None
        elif r is not True:
            if not isinstance(r, Tensor) or tuple(r.shape) != (s.batch, n_new):
                raise ValueError(f"Steering callback {sch} must return a [batch, n] = [{s.batch}, {n_new}] bool mask (or True / None), got {getattr(r, 'shape', type(r))}.")
            r = r if r.dtype == torch.bool else r != 0
        if r is not None and new_from < T and s.any_pad:
            r = (pos >= 0) & (True if r is True else r)
        if new_from == start:
            return r
        old = self.s._history_mask(e, new_from)  # [batch, new_from]
        new = torch.zeros((s.batch, n_new), dtype=torch.bool, device=s.device) if r is None else (r if isinstance(r, Tensor) else torch.ones((s.batch, n_new), dtype=torch.bool, device=s.device))
        return torch.cat([old.to(s.device), new], dim=1)


class Steering:
    """A live steering run: yielded by :func:`steer`; after the block it holds what was steered.

    ``steered`` lists ``(row, position)`` pairs, ``steered_mask`` is ``[batch, max_len]`` over
    absolute positions, ``steered_by(i)`` is the same for the ``i``-th vector.
    """

    def __init__(self, model: torch.nn.Module, vectors: Sequence[VectorSpec], *, at: ScheduleLike = "all", attention_mask: Tensor | None = None, check: bool = True, fingerprint: str | None = None) -> None:
        if isinstance(vectors, SteeringVector) or not isinstance(vectors, Sequence) or not vectors:
            raise ValueError("steer needs a non-empty list of (vector, alpha) or (vector, alpha, at) tuples, e.g. steer(model, [(vec, 2.0)]).")
        param = next(model.parameters())
        self.model, self.device, self.dtype = model, param.device, param.dtype
        default = Schedule.parse(at)
        hs = hidden_size_of(model)
        fp = fingerprint
        self.entries: list[_Entry] = []
        by_site: dict[str, list[_Entry]] = {}
        for i, spec in enumerate(vectors):
            if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[0], SteeringVector):
                raise ValueError(f"Item {i} of vectors is {spec!r}: expected (SteeringVector, alpha) or (SteeringVector, alpha, at).")
            vec, alpha = spec[0], check_alpha(spec[1], f"alpha of vector {spec[0].name!r}")
            if vec.d_model != hs:
                raise ValueError(f"Vector {vec.name!r} has d_model {vec.d_model}, but the model's hidden size is {hs}: it was made for another model.")
            if check:
                fp = fp or model_fingerprint(model)
                vec.check_model(model, fingerprint=fp)
            sch = Schedule.parse(spec[2]) if len(spec) == 3 else default
            delta = (alpha * vec.direction.detach().to(device=self.device, dtype=torch.float32)).to(self.dtype)
            e = _Entry(vec, alpha, sch, delta)
            self.entries.append(e)
            by_site.setdefault(str(vec.site), []).append(e)
        self.hooks = {site: _SiteHook(self, es) for site, es in by_site.items()}
        self.reset(attention_mask)

    # ------------------------------------------------------------------ state

    def reset(self, attention_mask: Tensor | None = None) -> None:
        """Forget what was seen and steered: the next forward is a new prompt (left-padded as ``attention_mask`` says)."""
        self.attention_mask = None if attention_mask is None else torch.as_tensor(attention_mask)
        self.batch = self.prompt_width = 0
        self.any_pad = False
        self.pad = torch.zeros(0, dtype=torch.long)
        self.pad_list: list[int] = []
        for h in self.hooks.values():
            h.reset()

    def _start(self, batch: int, width: int, device: torch.device) -> None:
        """Called on the prompt forward (first hook to see it): fix batch, width, padding and per-schedule tables."""
        if self.prompt_width:  # another site already saw this prompt
            if (batch, width) != (self.batch, self.prompt_width):
                raise ValueError(f"Steering sites disagree on the prompt shape ({self.batch}, {self.prompt_width}) vs ({batch}, {width}).")
            return
        self.device = device
        m = self.attention_mask
        if m is None:
            pad = torch.zeros(batch, dtype=torch.long)
        else:
            if tuple(m.shape) != (batch, width):
                raise ValueError(f"attention_mask has shape {tuple(m.shape)} but the prompt forward fed [{batch}, {width}] tokens: pass the attention mask of the prompt you generate from.")
            m = m.detach().cpu().long()
            pad = width - m.sum(1)
            if not torch.equal(m, (torch.arange(width)[None] >= pad[:, None]).long()):
                raise ValueError("Steering needs left-padded prompts (padding only at the start of each row): set tokenizer.padding_side = 'left'.")
            if bool((pad >= width).any()):
                raise ValueError(f"Row(s) {(pad >= width).nonzero().flatten().tolist()} of the prompt have no real tokens.")
        self.batch, self.prompt_width = batch, width
        self.pad_list = pad.tolist()
        self.any_pad = any(self.pad_list)
        self.pad = pad.to(device)
        for e in self.entries:
            sch = e.schedule
            if sch.kind == "steps":
                e.step_cols = frozenset(width - 1 + k for k in sch.steps)
            elif sch.kind == "positions":
                rows = self._rows_positions(sch)
                table: dict[int, Tensor] = {}
                for b, ps in enumerate(rows):
                    for p in ps:
                        table.setdefault(p + self.pad_list[b], torch.zeros(batch, dtype=torch.bool))[b] = True
                e.pos_cols = {c: r.to(device) for c, r in table.items()}
            elif sch.kind == "mask":
                if sch.mask.shape[0] != batch:
                    raise ValueError(f"The steering mask has {sch.mask.shape[0]} rows but the batch has {batch}: pass a [batch, steps] mask.")
                e.mask = sch.mask.to(device)
            if e.delta.device != device:
                e.delta = e.delta.to(device)

    def _rows_positions(self, sch: Schedule) -> list[tuple[int, ...]]:
        if len(sch.positions) == 1:
            return [sch.positions[0]] * self.batch
        if len(sch.positions) != self.batch:
            raise ValueError(f"Per-row positions give {len(sch.positions)} rows but the batch has {self.batch}.")
        return list(sch.positions)

    def real(self, start: int, n: int) -> Tensor:
        """``[batch, n]`` bool: which of columns ``start..start+n`` hold real (not padding) tokens."""
        return torch.arange(start, start + n, device=self.device)[None] >= self.pad[:, None]

    def _hook_of(self, e: _Entry) -> _SiteHook:
        return self.hooks[str(e.vector.site)]

    @property
    def width(self) -> int:
        """Columns (padded coordinates) seen so far."""
        return max((h.width for h in self.hooks.values()), default=0)

    @property
    def prompt_lengths(self) -> list[int]:
        return [self.prompt_width - p for p in self.pad_list] if self.prompt_width else []

    # ---------------------------------------------------------------- results

    def _history_mask(self, e: _Entry, width: int | None = None) -> Tensor:
        """``[batch, width]`` bool over padded columns: where ``e`` was applied."""
        width = self._hook_of(e).width if width is None else width
        m = torch.zeros((self.batch, width), dtype=torch.bool)
        for c0, k, dec in e.history:
            k = min(k, width - c0)
            if k <= 0 or dec is None:
                continue
            if dec is True:
                m[:, c0 : c0 + k] = torch.tensor(self.pad_list)[:, None] <= torch.arange(c0, c0 + k)[None]
            else:
                m[:, c0 : c0 + k] |= dec[:, :k].cpu()
        return m

    def _to_positions(self, cols: Tensor) -> Tensor:
        """Padded-column mask ``[batch, width]`` -> absolute-position mask ``[batch, max_len]``."""
        width = cols.shape[1]
        out = torch.zeros((self.batch, width - min(self.pad_list, default=0)), dtype=torch.bool)
        for b, p in enumerate(self.pad_list):
            out[b, : width - p] = cols[b, p:]
        return out

    def steered_by(self, i: int) -> Tensor:
        """``[batch, max_len]`` bool over absolute positions: where the ``i``-th vector was added."""
        if not self.batch:
            return torch.zeros((0, 0), dtype=torch.bool)
        return self._to_positions(self._history_mask(self.entries[i]))

    @property
    def steered_mask(self) -> Tensor:
        """``[batch, max_len]`` bool over absolute positions: where any vector was added."""
        masks = [self.steered_by(i) for i in range(len(self.entries))]
        out = masks[0]
        for m in masks[1:]:
            out = out | m
        return out

    @property
    def steered(self) -> list[tuple[int, int]]:
        """``(row, position)`` pairs where any vector was added, sorted."""
        return [tuple(x) for x in self.steered_mask.nonzero().tolist()]

    def steered_steps(self) -> list[list[int]]:
        """Per row, the generation steps whose deciding position was steered (token ``k`` of the completion was chosen under steering)."""
        m = self.steered_mask
        return [[p - (n - 1) for p in m[b].nonzero().flatten().tolist() if p >= n - 1] for b, n in enumerate(self.prompt_lengths)]

    def unreached(self) -> list[tuple[int, int]]:
        """``(row, position)`` of explicitly requested positions / steps that no forward reached."""
        missing: set[tuple[int, int]] = set()
        for e in self.entries:
            sch, width = e.schedule, self._hook_of(e).width
            if sch.kind not in ("positions", "steps"):
                continue
            if not self.batch:  # no forward ran at all: row -1 stands for every row
                missing |= {(-1, p) for p in (*sch.steps, *(p for r in sch.positions for p in r))}
            elif sch.kind == "positions":
                rows = self._rows_positions(sch)
                missing |= {(b, p) for b, ps in enumerate(rows) for p in ps if p + self.pad_list[b] >= width}
            else:
                missing |= {(b, n - 1 + k) for k in sch.steps if self.prompt_width - 1 + k >= width for b, n in enumerate(self.prompt_lengths)}
        return sorted(missing)

    def check_reached(self) -> None:
        """Raise :class:`PositionNotReachedError` if an explicitly requested position was never reached."""
        missing = self.unreached()
        if missing:
            shown = ", ".join(f"row {b} position {p}" if b >= 0 else f"position/step {p}" for b, p in missing[:6]) + (" …" if len(missing) > 6 else "")
            ends = sorted({self.width - p for p in self.pad_list})
            why = f"rows ended at length {', '.join(map(str, ends))}" if ends else "no forward pass ran inside the steer block"
            raise PositionNotReachedError(
                f"Steering was asked for {shown}, but generation never reached it ({why}): "
                "generate more tokens (max_new_tokens) or steer earlier positions."
            )


@contextmanager
def steer(model: torch.nn.Module, vectors: Sequence[VectorSpec], *, at: ScheduleLike = "all", attention_mask: Tensor | None = None, check: bool = True, fingerprint: str | None = None) -> Iterator[Steering]:
    """Add each ``alpha * vector.direction`` at its site, where its schedule says, for one generation.

    Args:
        vectors: ``[(vector, alpha)]`` or ``[(vector, alpha, at)]`` to give a vector its own schedule.
        at: default schedule (see :class:`Schedule`): ``"all"``, ``"prompt"``, ``"generated"``, ``"first"``,
            ``"positions 3,4"``, ``"steps 0,1"``, a list of positions, a ``[batch, steps]`` mask or a callback.
        attention_mask: the prompt's ``[batch, T]`` mask when rows are left-padded.
        check: refuse vectors made for another model (fingerprint); ``False`` checks the hidden size only.

    Raises :class:`PositionNotReachedError` on exit if an explicitly requested position was never reached.

    Example:
        >>> import torch
        >>> from transformers import Qwen2Config, Qwen2ForCausalLM
        >>> from latentreason.fingerprint import model_fingerprint
        >>> _ = torch.manual_seed(0)
        >>> model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)).eval()
        >>> vec = SteeringVector("v", torch.ones(16), "resid_post.0", "manual", model_fingerprint(model))
        >>> with steer(model, [(vec, 2.0)], at="positions 1") as s:
        ...     _ = model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=2, do_sample=False, pad_token_id=0)
        >>> s.steered
        [(0, 1)]
    """
    steering = Steering(model, vectors, at=at, attention_mask=attention_mask, check=check, fingerprint=fingerprint)
    with hooked(model, [(site, h) for site, h in steering.hooks.items()]):
        yield steering
    steering.check_reached()


@dataclass
class SteeredDecodeResult(DecodeResult):
    """:class:`~latentreason.generation.DecodeResult` plus the :class:`Steering` record."""

    steering: Steering | None = None

    @property
    def steered(self) -> list[tuple[int, int]]:
        return self.steering.steered if self.steering else []


def steered_decode(model, input_ids: Tensor, attention_mask: Tensor | None = None, *, vectors: Sequence[VectorSpec], at: ScheduleLike = "all", check: bool = True, fingerprint: str | None = None, **decode_kwargs: Any) -> SteeredDecodeResult:
    """:func:`~latentreason.generation.decode` under :func:`steer` (same arguments); returns the result with ``.steering``."""
    with steer(model, vectors, at=at, attention_mask=attention_mask, check=check, fingerprint=fingerprint) as s:
        res = decode(model, input_ids, attention_mask, **decode_kwargs)
    return SteeredDecodeResult(res.prompt_ids, res.tokens, res.lengths, res.finished, s)


def generate_steered(model, input_ids: Tensor, attention_mask: Tensor | None = None, *, vectors: Sequence[VectorSpec], at: ScheduleLike = "all", check: bool = True, fingerprint: str | None = None, **generate_kwargs: Any) -> tuple[Any, Steering]:
    """Hugging Face ``model.generate`` under :func:`steer`; returns ``(generate output, Steering)``."""
    kwargs = dict(generate_kwargs)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    with steer(model, vectors, at=at, attention_mask=attention_mask, check=check, fingerprint=fingerprint) as s:
        out = model.generate(input_ids, **kwargs)
    return out, s
