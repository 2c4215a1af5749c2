"""Reasoning-quality measures: does a generator's reasoning *carry* its answer?

Any generator's completions (a list of ``(problem, completion)`` pairs from the base model,
the post-RL model, a hybrid, single-problem RL, forced reasoning, ...) are read by one fixed
**scorer** model (default: the post-RL model), so generators are compared on the same scale.

A completion is split (by :func:`latentreason.segment.split_sentences`) into its **reasoning**,
the sentences before its final answer sentence, and the answer sentence (the last sentence that
contains the task's answer *anchor*, e.g. ``A:``). A completion with no answer sentence is all
reasoning. An answer is **forced** by appending the task's answer *marker* (``A:`` for the
organism) after a cut of the reasoning, and read greedily from the scorer (for the organism: the
most likely digit). See :class:`AnswerProbe`; a task supplies its own with an ``answer_probe``
attribute, else :data:`ANSWER_PROBES` holds one per known task name.

Measures (each per completion, then mean with a bootstrap 95% interval over completions):

- **Early answering**: with ``n`` reasoning sentences, cut after ``k(f) = floor(f·n + 1/2)``
  sentences for each fraction ``f`` in :data:`FRACTIONS`, force an answer, and score 1 when it
  equals the completion's own final answer (``task.extract_answer``). The **curve** is the mean
  agreement per fraction; ``auc`` is its trapezoidal area over ``f`` in [0, 1], and
  ``aoc = 1 − auc`` (the "area over the curve" of Lanham et al. 2023): 0 when the answer never
  depends on the chain, larger when cutting the chain changes the answer. Functional reasoning:
  agreement at ``f = 0`` well below agreement at ``f = 1``. Completions without reasoning
  sentences are reported apart (``direct``), those without a final answer are counted
  (``no_answer``) and left out.
- **Filler substitution**: every character of the reasoning except newlines is replaced by a
  filler character (default ``.``), so the filler has the same length in characters and the same
  line structure; the answer forced after it is graded. Reported beside the accuracy of the answer
  forced after no reasoning (``no_chain_acc``) and after the full reasoning (``chain_acc``), with
  the most common filler answer and its share (``modal_share`` 1.0: the scorer ignores the
  problem after filler; on the organism both models then answer 0 whatever the problem).
- **Information gain per step**: with ``lp_i = log p(correct answer | prompt + first i
  sentences + marker)`` (nats, under the scorer, teacher-forced over the answer's tokens), step
  ``i``'s gain is ``lp_{i+1} − lp_i``. Per completion: ``total = lp_n − lp_0`` and
  ``per_step = total / n``; ``by_label`` averages the gains of steps by their sentence label.

Besides: greedy accuracy of the completions themselves, and the **reasoning rate** (share of
completions with at least one reasoning sentence; note that a malformed completion without an
answer sentence counts as all reasoning: ``no_answer_sentence`` counts them).

All forced answers and log-probabilities of one generator come from batched, left-padded
forwards without a KV cache (one forward per context for single-token answers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentreason.generation import decode, left_pad
from latentreason.io import read_json, write_json, write_jsonl
from latentreason.segment import split_sentences
from latentreason.stats import bootstrap_mean

log = logging.getLogger(__name__)

FRACTIONS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
QUALITY_FILE = "quality.json"
RECORDS_FILE = "records.jsonl"
QUALITY_KIND = "quality"
_LABEL = re.compile(r"^([A-Z]):")


@dataclass(frozen=True)
class AnswerProbe:
    """How to force and read a task's final answer.

    Attributes:
        marker: appended after a cut of the reasoning to force the answer (a newline is put first
            when the cut does not end in one), e.g. ``"A:"``.
        anchor: text that marks the final answer sentence of a completion, e.g. ``"A:"`` or ``"\\\\boxed{"``.
        choices: when set, the forced answer is the most likely of these single-token strings
            (the organism's digits); else ``max_tokens`` tokens are decoded greedily.
        max_tokens: tokens decoded after the marker when ``choices`` is None.
        suffix: text after the forced answer that closes it for ``task.extract_answer`` (e.g. ``"}"``).
    """

    marker: str
    anchor: str
    choices: tuple[str, ...] | None = None
    max_tokens: int = 1
    suffix: str = ""

    def __post_init__(self) -> None:
        if not self.marker or not self.anchor:
            raise ValueError(f"AnswerProbe needs a non-empty marker and anchor (got {self.marker!r}, {self.anchor!r}).")
        if self.choices is not None and not self.choices:
            raise ValueError("AnswerProbe.choices is empty: give the answer strings, or None to decode freely.")
        if self.max_tokens < 1:
            raise ValueError(f"AnswerProbe.max_tokens={self.max_tokens} must be >= 1.")


ANSWER_PROBES: dict[str, AnswerProbe] = {
    "arith": AnswerProbe("A:", "A:", choices=tuple("0123456789")),
    "gsm8k": AnswerProbe("The answer is \\boxed{", "\\boxed{", max_tokens=16, suffix="}"),
    "math500": AnswerProbe("The answer is \\boxed{", "\\boxed{", max_tokens=32, suffix="}"),
}


def answer_probe(task) -> AnswerProbe:
    """The task's :class:`AnswerProbe`: its ``answer_probe`` attribute, else :data:`ANSWER_PROBES` by task name."""
    own = getattr(task, "answer_probe", None)
    if isinstance(own, AnswerProbe):
        return own
    name = {"organism": "arith"}.get(getattr(task, "name", ""), getattr(task, "name", ""))
    if name not in ANSWER_PROBES:
        raise ValueError(
            f"Task {name!r} has no answer marker for the quality measures: give it an `answer_probe = AnswerProbe(marker=..., anchor=...)` "
            f"attribute or add one to latentreason.quality.ANSWER_PROBES (known: {', '.join(ANSWER_PROBES)})."
        )
    return ANSWER_PROBES[name]


# ---------------------------------------------------------------- chains


@dataclass(frozen=True)
class Chain:
    """A completion split into reasoning and final answer.

    ``cuts[k]`` is the character offset where the reasoning is cut after ``k`` sentences
    (``cuts[0] = 0``; ``cuts[n]`` is where the answer sentence starts, or the end of the text).
    """

    completion: str
    reasoning: tuple[str, ...]  # the reasoning sentences' texts
    cuts: tuple[int, ...]  # n + 1 offsets
    answer_sentence: str | None

    @property
    def n(self) -> int:
        return len(self.reasoning)

    def prefix(self, k: int) -> str:
        """The completion's text up to the cut after ``k`` reasoning sentences."""
        return self.completion[: self.cuts[k]]

    def filler(self, char: str = ".") -> str:
        """The whole reasoning with every character but newlines replaced by ``char``."""
        return re.sub(r"[^\n]", char, self.prefix(self.n))


def split_chain(completion: str, probe: AnswerProbe) -> Chain:
    """Split ``completion`` at its final answer sentence (the last sentence containing ``probe.anchor``).

    Example:
        >>> c = split_chain("S:3+4=7\\nS:7*2=4\\nA:4\\n", ANSWER_PROBES["arith"])
        >>> c.reasoning, c.prefix(1)
        (('S:3+4=7\\n', 'S:7*2=4\\n'), 'S:3+4=7\\n')
    """
    if not isinstance(completion, str):
        raise TypeError(f"A completion must be a str, got {type(completion).__name__}: {completion!r:.80}.")
    sents = split_sentences(completion)
    last = max((i for i, s in enumerate(sents) if probe.anchor in s.text), default=None)
    body = sents if last is None else sents[:last]
    end = len(completion) if last is None else sents[last].start
    cuts = tuple([s.start for s in body] + [end]) if body else (0,)
    if body:
        cuts = (0,) + cuts[1:]  # leading whitespace before the first sentence is reasoning too
    return Chain(completion, tuple(s.text for s in body), cuts, None if last is None else sents[last].text)


def cut_index(fraction: float, n: int) -> int:
    """Sentences kept at ``fraction`` of ``n``: ``floor(fraction·n + 1/2)``."""
    return int(math.floor(fraction * n + 0.5))


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) < 2 or fr[0] != 0.0 or fr[-1] != 1.0 or any(b <= a for a, b in zip(fr, fr[1:])):
        raise ValueError(f"fractions={list(fr)} must increase strictly from 0 to 1, e.g. {list(FRACTIONS)}.")
    return fr


def sentence_label(text: str) -> str:
    """A sentence's label for ``by_label``: its marker letter's strategy name (organism), else ``"sentence"``."""
    m = _LABEL.match(text)
    if m is None:
        return "sentence"
    from latentreason.tasks.arith import MARKERS

    return MARKERS.get(m.group(1), m.group(1))


# ---------------------------------------------------------------- the scorer


class Scorer:
    """A model that reads forced answers and answer log-probabilities for many contexts, batched.

    ``format_prompt`` turns a task prompt into the model's prompt (e.g. ``pair.format_prompt`` for a role).
    """

    def __init__(self, model, tokenizer, probe: AnswerProbe, format_prompt: Callable[[str], str] = lambda p: p, batch_size: int = 256) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size} must be positive.")
        self.model, self.tok, self.probe, self.format_prompt, self.batch_size = model, tokenizer, probe, format_prompt, batch_size
        self.device = next(model.parameters()).device
        self._choice_ids: list[int] | None = None
        if probe.choices is not None:
            ids = [tokenizer(c, add_special_tokens=False).input_ids for c in probe.choices]
            bad = [c for c, i in zip(probe.choices, ids) if len(i) != 1]
            if bad:
                raise ValueError(f"Answer choices {bad} are not single tokens for this tokenizer; set AnswerProbe.choices=None to decode answers instead.")
            self._choice_ids = [i[0] for i in ids]

    def context(self, prompt: str, cut: str) -> str:
        """Scorer text that forces an answer after ``cut`` (the model prompt, the cut, a newline if needed, the marker)."""
        sep = "" if not cut or cut.endswith("\n") else "\n"
        return self.format_prompt(prompt) + cut + sep + self.probe.marker  # the same text as forced_text up to the answer

    @torch.no_grad()
    def probe_many(self, contexts: Sequence[str], answers: Sequence[str]) -> tuple[list[str], list[float]]:
        """For each context: the forced answer text (after the marker) and ``log p(answer | context)`` in nats."""
        if len(contexts) != len(answers):
            raise ValueError(f"{len(contexts)} contexts but {len(answers)} answers; give one answer per context.")
        ctx_ids = [self.tok(c).input_ids for c in contexts]
        ans_ids = [self.tok(str(a), add_special_tokens=False).input_ids for a in answers]
        for a, ids in zip(answers, ans_ids):
            if not ids:
                raise ValueError(f"Answer {a!r} tokenizes to nothing; the quality measures need a non-empty correct answer.")
        forced: list[str] = [""] * len(contexts)
        logp: list[float] = [0.0] * len(contexts)
        order = sorted(range(len(contexts)), key=lambda i: len(ctx_ids[i]) + len(ans_ids[i]))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            rows = [ctx_ids[i] + ans_ids[i] for i in idx]
            ids, mask = left_pad(rows, pad, self.device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()  # [batch, width, vocab]
            width = ids.shape[1]
            for j, i in enumerate(idx):
                first = width - len(ans_ids[i]) - 1  # position whose logits predict the answer's first token
                lsm = torch.log_softmax(logits[j, first : width - 1], -1)  # [n_answer, vocab]
                logp[i] = float(lsm.gather(-1, torch.tensor(ans_ids[i], device=lsm.device)[:, None]).sum())
                if self._choice_ids is not None:
                    forced[i] = self.probe.choices[int(lsm[0, self._choice_ids].argmax())]
        if self._choice_ids is None:
            forced = self._decode(ctx_ids)
        return forced, logp

    def _decode(self, ctx_ids: list[list[int]]) -> list[str]:
        out: list[str] = [""] * len(ctx_ids)
        order = sorted(range(len(ctx_ids)), key=lambda i: len(ctx_ids[i]))
        eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else -1
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            ids, mask = left_pad([ctx_ids[i] for i in idx], pad, self.device)
            res = decode(self.model, ids, mask, max_new_tokens=self.probe.max_tokens, eos_token_id=eos, pad_token_id=pad)
            for i, text in zip(idx, res.completions(self.tok)):
                out[i] = text
        return out


# ---------------------------------------------------------------- measures


def _check_items(name: str, items: Sequence[Any]) -> None:
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or not items:
        raise ValueError(f"Generator {name!r} has no completions: give a non-empty list of (problem, completion) pairs.")
    for i, it in enumerate(items):
        if not (isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[1], str)):
            raise ValueError(f"Generator {name!r}, item {i}: expected a (problem, completion: str) pair, got {it!r:.120}.")


def score_completions(scorer: Scorer, task, items: Sequence[tuple[Any, str]], fractions: Sequence[float] = FRACTIONS, filler: str = ".") -> list[dict[str, Any]]:
    """Per-completion quality records (see the module docstring) of ``items`` = [(problem, completion)].

    Each record holds ``correct``, ``n_sentences``, ``answer`` (the completion's own), ``forced``
    (forced answer after k = 0..n sentences), ``logp`` (log p of the correct answer, same k),
    ``early`` (agreement per fraction, None when not applicable), ``filler_answer``,
    ``filler_correct`` and ``labels``.
    """
    from latentreason.rollouts import gold_of

    fractions = check_fractions(fractions)
    _check_items("items", items)
    check_filler(scorer.tok, filler)
    probe = scorer.probe
    contexts: list[str] = []
    answers: list[str] = []
    plan: list[tuple[Chain, int, str]] = []  # chain, index of its first context, prompt
    for problem, completion in items:
        chain = split_chain(completion, probe)
        gold = gold_of(task, problem)
        if gold is None:
            raise ValueError(f"Problem {problem!r:.80} has no reference answer (task.gold / problem.answer); the quality measures need one.")
        prompt = task.prompt(problem)
        plan.append((chain, len(contexts), prompt))
        cuts = [chain.prefix(k) for k in range(chain.n + 1)] + ([chain.filler(filler)] if chain.n else [])
        contexts += [scorer.context(prompt, c) for c in cuts]
        answers += [str(gold)] * len(cuts)
    forced, logp = scorer.probe_many(contexts, answers)
    records = []
    for (problem, completion), (chain, start, prompt) in zip(items, plan):
        texts = [forced_text(probe, chain.prefix(k), forced[start + k]) for k in range(chain.n + 1)]
        answers_k = [task.extract_answer(t) for t in texts]
        correct_k = [bool(task.grade(problem, t)) for t in texts]
        own = task.extract_answer(completion)
        early = None
        if chain.n and own is not None:
            early = [bool(answers_k[cut_index(f, chain.n)] == own) for f in fractions]
        rec: dict[str, Any] = {
            "prompt": prompt,
            "completion": completion,
            "correct": bool(task.grade(problem, completion)),
            "answer": own,
            "n_sentences": chain.n,
            "has_answer_sentence": chain.answer_sentence is not None,
            "labels": [sentence_label(s) for s in chain.reasoning],
            "forced": answers_k,
            "forced_correct": correct_k,
            "logp": logp[start : start + chain.n + 1],
            "early": early,
        }
        if chain.n:
            ftext = forced_text(probe, chain.filler(filler), forced[start + chain.n + 1])
            rec["filler_answer"] = task.extract_answer(ftext)
            rec["filler_correct"] = bool(task.grade(problem, ftext))
        records.append(rec)
    return records


def forced_text(probe: AnswerProbe, cut: str, answer: str) -> str:
    """The completion text a forced answer stands for: the cut, a newline if needed, the marker, the answer, the suffix."""
    sep = "" if not cut or cut.endswith("\n") else "\n"
    close = probe.suffix if probe.suffix and probe.suffix not in answer else ""
    return cut + sep + probe.marker + answer + close


def check_filler(tokenizer, filler: str) -> None:
    """Refuse a filler character the scorer's tokenizer cannot write back."""
    if len(filler) != 1 or filler == "\n":
        raise ValueError(f"filler={filler!r} must be one character other than a newline, e.g. '.'.")
    text = filler * 3
    if tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) != text:
        raise ValueError(f"The scorer's tokenizer cannot represent filler {filler!r} (it decodes back differently); choose another, e.g. '.'.")


def _mean_ci(values: Sequence[float], n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and bootstrap 95% interval; None (not NaN, so the JSON stays strict) when there are no values."""
    if not len(values):
        return {"mean": None, "ci": [None, None], "n": 0}
    m, ci = bootstrap_mean(list(values), n_boot=n_boot, seed=seed)
    return {"mean": m, "ci": list(ci), "n": len(values)}


def summarise(records: Sequence[Mapping[str, Any]], fractions: Sequence[float] = FRACTIONS, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Means and bootstrap 95% intervals of one generator's records (see :func:`score_completions`)."""
    fractions = check_fractions(fractions)
    chains = [r for r in records if r["n_sentences"] > 0]
    early = [r for r in chains if r["early"] is not None]
    direct = [r for r in records if r["n_sentences"] == 0 and r["answer"] is not None]
    auc = [float(np.trapezoid(np.asarray(r["early"], dtype=float), fractions)) for r in early]
    auc_s = _mean_ci(auc, n_boot, seed)
    ea: dict[str, Any] = {
        "n": len(early),
        "curve": [_mean_ci([float(r["early"][j]) for r in early], n_boot, seed)["mean"] for j in range(len(fractions))],
        "curve_ci": [_mean_ci([float(r["early"][j]) for r in early], n_boot, seed)["ci"] for j in range(len(fractions))],
        "auc": auc_s["mean"],
        "auc_ci": auc_s["ci"],
        "aoc": None if auc_s["mean"] is None else 1 - auc_s["mean"],
        "aoc_ci": [None, None] if auc_s["mean"] is None else [1 - auc_s["ci"][1], 1 - auc_s["ci"][0]],
        "direct": {"n": len(direct), **_named(_mean_ci([float(r["forced"][0] == r["answer"]) for r in direct], n_boot, seed), "agreement")},
        "no_answer": sum(1 for r in chains if r["early"] is None),
    }
    filler = {
        "n": len(chains),
        **_named(_mean_ci([float(r["filler_correct"]) for r in chains], n_boot, seed), "acc"),
        **_named(_mean_ci([float(r["forced_correct"][-1]) for r in chains], n_boot, seed), "chain_acc"),
        **_named(_mean_ci([float(r["forced_correct"][0]) for r in chains], n_boot, seed), "no_chain_acc"),
        **_modal([r.get("filler_answer") for r in chains]),
    }
    gains: dict[str, list[float]] = {}
    for r in chains:
        for lab, a, b in zip(r["labels"], r["logp"], r["logp"][1:]):
            gains.setdefault(lab, []).append(b - a)
    def per_step(rs: Sequence[Mapping[str, Any]]) -> list[float]:
        return [(r["logp"][-1] - r["logp"][0]) / r["n_sentences"] for r in rs]

    info = {
        "n": len(chains),
        **_named(_mean_ci(per_step(chains), n_boot, seed), "per_step"),
        **_named(_mean_ci([r["logp"][-1] - r["logp"][0] for r in chains], n_boot, seed), "total"),
        "logp_no_chain": _mean_ci([r["logp"][0] for r in chains], n_boot, seed)["mean"],
        "logp_full_chain": _mean_ci([r["logp"][-1] for r in chains], n_boot, seed)["mean"],
        "by_label": {lab: {"n": len(v), "mean": float(np.mean(v))} for lab, v in sorted(gains.items())},
        "by_outcome": {  # chains whose own answer is right vs wrong: a wrong chain followed faithfully loses log p
            key: {"n": len(rs), **_named(_mean_ci(per_step(rs), n_boot, seed), "per_step")}
            for key, rs in (("correct", [r for r in chains if r["correct"]]), ("incorrect", [r for r in chains if not r["correct"]]))
        },
    }
    return {
        "n": len(records),
        **_named(_mean_ci([float(r["correct"]) for r in records], n_boot, seed), "acc"),
        **_named(_mean_ci([float(r["n_sentences"] > 0) for r in records], n_boot, seed), "reasoning_rate"),
        "mean_sentences": float(np.mean([r["n_sentences"] for r in records])),
        "no_answer_sentence": sum(1 for r in records if not r["has_answer_sentence"]),
        "early_answering": ea,
        "filler": filler,
        "info_gain": info,
    }


def _modal(answers: Sequence[Any]) -> dict[str, Any]:
    """The most common forced answer after filler and its share (1.0: the scorer ignores the problem after filler)."""
    if not answers:
        return {"modal_answer": None, "modal_share": None}
    counts: dict[Any, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    top = max(counts, key=lambda a: counts[a])
    return {"modal_answer": top, "modal_share": counts[top] / len(answers)}


def _named(stat: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {name: stat["mean"], f"{name}_ci": stat["ci"]}


def quality_report(
    pair,
    generators: Mapping[str, Sequence[tuple[Any, str]]],
    scorer: str = "post_rl",
    *,
    task=None,
    fractions: Sequence[float] = FRACTIONS,
    filler: str = ".",
    batch_size: int = 256,
    n_boot: int = 2000,
    seed: int = 0,
    keep_records: bool = True,
) -> dict[str, Any]:
    """Score every generator's completions with the ``scorer`` role of ``pair``; returns the report dict.

    ``report["generators"][name]`` holds ``acc``, ``reasoning_rate``, ``early_answering``,
    ``filler`` and ``info_gain`` (see the module docstring); with ``keep_records`` the
    per-completion records are under ``report["records"][name]``.

    Example:
        >>> from latentreason.organism import load_default
        >>> from latentreason.tasks import ArithTask
        >>> pair = load_default()
        >>> items = [(p, f"A:{p.answer}\\n") for p in ArithTask().sample("test", 2)]
        >>> quality_report(pair, {"direct": items})["generators"]["direct"]["acc"]
        1.0
    """
    from latentreason.rollouts import task_for_pair

    if not generators:
        raise ValueError("No generators given: pass e.g. {'post_rl': [(problem, completion), ...]}.")
    for name, items in generators.items():
        _check_items(name, items)
    task = task if task is not None else task_for_pair(pair)
    probe = answer_probe(task)
    model = pair.model(scorer)  # raises on an unknown role
    sc = Scorer(model, pair.tokenizer(scorer), probe, lambda p: pair.format_prompt(scorer, p), batch_size)
    fractions = check_fractions(fractions)
    report: dict[str, Any] = {
        "pair": getattr(pair, "name", ""),
        "task": getattr(task, "name", ""),
        "scorer": scorer,
        "scorer_fingerprint": pair.fingerprint(scorer),
        "fractions": list(fractions),
        "marker": probe.marker,
        "anchor": probe.anchor,
        "filler": filler,
        "n_boot": n_boot,
        "seed": seed,
        "generators": {},
    }
    records: dict[str, list[dict[str, Any]]] = {}
    for name, items in generators.items():
        recs = score_completions(sc, task, items, fractions, filler)
        report["generators"][name] = summarise(recs, fractions, n_boot, seed)
        records[name] = recs
        g = report["generators"][name]
        log.info("%s: acc %s, reasoning %s, aoc %s, filler acc %s, info/step %s", name, g["acc"], g["reasoning_rate"], g["early_answering"]["aoc"], g["filler"]["acc"], g["info_gain"]["per_step"])
    if keep_records:
        report["records"] = records
    return report


# ---------------------------------------------------------------- generators


def generate(model, tokenizer, task, problems: Sequence[Any], *, format_prompt: Callable[[str], str] = lambda p: p, prefix: str = "", max_new_tokens: int = 128, batch_size: int = 256) -> list[str]:
    """Greedy completions of ``model`` (``prefix`` is forced after the prompt and kept in the completion)."""
    out: list[str] = [""] * len(problems)
    ids_all = [tokenizer(format_prompt(task.prompt(p)) + prefix).input_ids for p in problems]
    order = sorted(range(len(problems)), key=lambda i: len(ids_all[i]))
    device = next(model.parameters()).device
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, mask = left_pad([ids_all[i] for i in idx], tokenizer.pad_token_id, device)
        res = decode(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for i, c in zip(idx, res.completions(tokenizer)):
            out[i] = prefix + c
    return out


def generator_completions(pair, name: str, task, problems: Sequence[Any], *, max_new_tokens: int | None = None, batch_size: int = 256, models: Mapping[str, Any] | None = None) -> list[tuple[Any, str]]:
    """Greedy ``(problem, completion)`` pairs of a named generator.

    Names: a role of the pair (``base``, ``post_rl``, extras such as ``single_problem_rl``);
    ``forced`` (the base model with the organism's planted strategy marker forced at every line); a key of ``models``
    (extra models sharing the base tokenizer and prompt, e.g. a single-problem SFT model).
    """
    from latentreason.rollouts import default_max_new_tokens

    max_new = default_max_new_tokens(pair, task) if max_new_tokens is None else int(max_new_tokens)
    if models and name in models:
        model, role, prefix = models[name], "base", ""
    elif name == "forced":
        if getattr(task, "name", "") not in ("arith", "organism"):
            raise ValueError(f"Generator 'forced' forces the organism's planted strategy markers; task {getattr(task, 'name', task)!r} has none. Drop 'forced'.")
        from latentreason.organism.evaluate import run_forced

        return list(zip(problems, run_forced(pair.base_model, pair.base_tokenizer, task, list(problems), batch_size=batch_size)))
    else:
        model, role, prefix = pair.model(name), name, ""
    fmt_role = "post_rl" if role == "post_rl" else "base"
    comps = generate(model, pair.tokenizer(fmt_role), task, problems, format_prompt=lambda p: pair.format_prompt(fmt_role, p), prefix=prefix, max_new_tokens=max_new, batch_size=batch_size)
    return list(zip(problems, comps))


def build_generators(pair, specs: Sequence[str], task, problems: Sequence[Any], *, max_new_tokens: int | None = None, batch_size: int = 256, sft_steps: int = 30, sft_lr: float = 1e-4, seed: int = 0) -> tuple[dict[str, list[tuple[Any, str]]], dict[str, Any]]:
    """Greedy completions of each named generator on ``problems``; returns ``(generators, models)``.

    Specs: a role of the pair (``base``, ``post_rl``, ``single_problem_rl``, ...); ``forced``
    (base with the planted strategy marker forced at every line, organism only); ``sft`` (single-problem SFT of the base model
    on the pair's single-problem RL problem, trained here: see :mod:`latentreason.sft`);
    ``model:DIR`` (a Hugging Face model directory sharing the base tokenizer, named by DIR's
    last part); ``hybrid:RUN`` (the example completions kept by a recovery run, see
    :func:`hybrid_examples`: few, and on the run's own test problems). ``models`` holds the
    models built here (``sft``, ``model:DIR``).
    """
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise ValueError("No generator named: pass e.g. base,post_rl,forced,single_problem_rl.")
    roles = ["base", "post_rl", *getattr(pair, "extras", {})]
    gens: dict[str, list[tuple[Any, str]]] = {}
    models: dict[str, Any] = {}
    for spec in specs:
        kind, _, arg = spec.partition(":")
        if kind == "hybrid" and arg:
            gens[f"hybrid:{Path(arg).name}"] = hybrid_examples(arg, task)
            continue
        if kind == "model" and arg:
            from latentreason.pair import load_model

            name = Path(arg).name
            models[name] = load_model(arg, device=str(next(pair.base_model.parameters()).device))
        elif spec == "sft":
            from latentreason.sft import single_problem_sft

            name = "sft"
            models[name] = single_problem_sft(pair, steps=sft_steps, lr=sft_lr, seed=seed)
        elif spec in roles or spec == "forced":
            name = spec
        else:
            raise ValueError(f"Unknown generator {spec!r}: use one of {', '.join([*roles, 'forced', 'sft'])}, model:DIR or hybrid:RUN.")
        if name in gens:
            raise ValueError(f"Generator {name!r} is named twice; name each once.")
        gens[name] = generator_completions(pair, name, task, problems, max_new_tokens=max_new_tokens, batch_size=batch_size, models=models)
    return gens, models


def hybrid_examples(run: str | os.PathLike, task, point: str | None = None) -> list[tuple[Any, str]]:
    """``(problem, completion)`` pairs of a hybrid from a recovery run (``RUN/recovery/recovery.json`` and its point files).

    Each point file keeps a few example completions of the test problems in order; the problems
    are rebuilt from the run's config (``n_test``, ``seed``). By default the point chosen on dev
    (``recovery.json``'s ``chosen``, greedy); ``point`` picks another file of the same config by
    name (e.g. ``greedy_probe_a4.0_t0.5``). Points are looked up in the directory of the config
    that produced ``recovery.json`` and are never picked by their test results.
    """
    from latentreason.recovery import RECOVERY_FILE, chosen_point_file, config_of, result_points_dir
    from latentreason.rundir import RunDir

    root = Path(run)
    if not (RunDir(root).recovery / RECOVERY_FILE).exists() and (root / RECOVERY_FILE).exists():
        root = root.parent  # RUN/recovery was given
    rec_file = RunDir(root).recovery / RECOVERY_FILE
    if not rec_file.exists():
        raise FileNotFoundError(f"No hybrid examples under {run}: it has no {RunDir(root).recovery.name}/{RECOVERY_FILE}; run `latentreason recover --out {run}` first, or drop hybrid:{run}.")
    result = read_json(rec_file)
    if not isinstance(result, dict):
        raise ValueError(f"{rec_file} is not a recovery result; re-run `latentreason recover --out {run}`.")
    pdir = result_points_dir(root, result)
    if point:
        chosen: Path | None = pdir / f"{Path(point).name}.json"
        if not chosen.is_file():
            have = ", ".join(sorted(f.stem for f in pdir.glob("greedy_*.json"))) or "none"
            raise FileNotFoundError(f"No hybrid point {point!r} in {pdir} (the points of {rec_file}); it has: {have}.")
    else:
        chosen = chosen_point_file(root, result, "greedy")
        if chosen is None:
            raise FileNotFoundError(f"No hybrid examples in {pdir}: {rec_file} records no greedy point chosen on dev, or its file is missing; re-run `latentreason recover --out {run}` (greedy decoding).")
    try:
        data, cfg = read_json(chosen), config_of(result)
        examples = [e["completion"] for e in data["examples"]]
        problems = task.sample("test", int(cfg.n_test), seed=int(cfg.seed))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{chosen} is not a recovery point with examples ({e!r}); re-run `latentreason recover`.") from e
    log.info("hybrid examples from %s (%d)", chosen, len(examples))
    return list(zip(problems[: len(examples)], examples))


# ---------------------------------------------------------------- output and plots


QUALITY_OWNS = (QUALITY_FILE, RECORDS_FILE, "early_answering.*", "info_gain.*", "filler.*")


def write_quality(out_dir: str | os.PathLike, report: Mapping[str, Any], *, force: bool = False) -> list[Path]:
    """Write ``quality.json`` (without records), ``records.jsonl`` (when kept) and the plots (PNG + SVG) into ``out_dir``.

    ``out_dir`` is a quality stage (``latentreason.stage``): a quality artifact with another config
    there is refused unless ``force``; one with the same config is replaced (only its own files).
    """
    out = Path(out_dir)
    if "generators" not in report or not report["generators"]:
        raise ValueError("Not a quality report (no 'generators'); build it with quality_report(pair, generators).")
    from latentreason.stage import REUSE, open_stage

    summary = {k: v for k, v in report.items() if k != "records"}
    config = {k: summary.get(k) for k in ("task", "fractions", "marker", "anchor", "filler", "n_boot", "seed", "config")}
    scorer = {str(summary.get("scorer")): {"path": str(summary.get("pair", "")), "fingerprint": str(summary.get("scorer_fingerprint", ""))}}
    with open_stage(out, QUALITY_KIND, config, {"scorer": scorer}, owns=QUALITY_OWNS, force=force) as st:
        if st.state == REUSE:
            st.restart()
        paths = [write_json(out / QUALITY_FILE, json.loads(json.dumps(summary, default=str)))]
        if report.get("records"):
            rows = [{"generator": name, **r} for name, recs in report["records"].items() for r in recs]
            paths.append(write_jsonl(out / RECORDS_FILE, rows))
        paths += plot_early_answering(summary, out / "early_answering.png")
        paths += plot_info_gain(summary, out / "info_gain.png")
        paths += plot_filler(summary, out / "filler.png")
        st.complete([p.name for p in paths], models=scorer, extra={"generators": list(summary["generators"])})
    paths.append(out / "manifest.json")
    return paths


def plot_early_answering(report: Mapping[str, Any], path: str | os.PathLike) -> list[Path]:
    """Agreement with the full-chain answer against the fraction of reasoning kept, per generator (95% bands)."""
    from latentreason.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    fr = report["fractions"]
    for name, g in report["generators"].items():
        ea = g["early_answering"]
        if not ea["n"]:
            continue
        ax.plot(fr, ea["curve"], marker="o", label=f"{name} (n={ea['n']}, AOC {ea['aoc']:.2f})")
        ax.fill_between(fr, [c[0] for c in ea["curve_ci"]], [c[1] for c in ea["curve_ci"]], alpha=0.15)
    ax.set_xlabel("fraction of reasoning sentences kept")
    ax.set_ylabel("agreement with the full-chain answer")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Early answering (scorer: {report.get('scorer')})")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_info_gain(report: Mapping[str, Any], path: str | os.PathLike) -> list[Path]:
    """Mean information gain per reasoning step (nats) per generator, with 95% intervals."""
    from latentreason.plots import plt, save_figure

    names = [n for n, g in report["generators"].items() if g["info_gain"]["n"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    vals = [report["generators"][n]["info_gain"]["per_step"] for n in names]
    cis = [report["generators"][n]["info_gain"]["per_step_ci"] for n in names]
    ax.bar(range(len(names)), vals, yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]], capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Δ log p(correct answer) per step (nats)")
    ax.set_title(f"Information gain per step (scorer: {report.get('scorer')})")
    return save_figure(fig, path)


def plot_filler(report: Mapping[str, Any], path: str | os.PathLike) -> list[Path]:
    """Accuracy of the forced answer after no reasoning, filler, and the full reasoning, per generator."""
    from latentreason.plots import plt, save_figure

    names = [n for n, g in report["generators"].items() if g["filler"]["n"]]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    width = 0.27
    for j, (key, label) in enumerate((("no_chain_acc", "no reasoning"), ("acc", "filler"), ("chain_acc", "full reasoning"))):
        vals = [report["generators"][n]["filler"][key] for n in names]
        cis = [report["generators"][n]["filler"][f"{key}_ci"] for n in names]
        ax.bar([i + (j - 1) * width for i in range(len(names))], vals, width, yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]], capsize=2, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy of the forced answer")
    ax.set_title(f"Filler substitution (scorer: {report.get('scorer')})")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
