"""Train the organism: pretrain the base model on the corpus, then GRPO-style RL.

Every stage writes its model directory atomically and checkpoints (weights, Adam state,
step) every ``checkpoint_every`` steps, so an interrupted run resumes where it stopped and
reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentreason import __version__
from latentreason.generation import decode
from latentreason.io import load_tensors, read_json, save_tensors, sha256_file, write_json
from latentreason.organism.corpus import CorpusConfig, Example, make_corpus
from latentreason.organism.model import ModelConfig, build_model
from latentreason.organism.tokenizer import build_tokenizer
from latentreason.pair import PAIR_KIND, PAIR_MANIFEST, load_model
from latentreason.tasks.arith import ArithConfig, ArithTask, Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000  # the step-arithmetic circuit forms around step 700-900; 1000 keeps the pair's retrain under 5 minutes on 2 cores
    batch_size: int = 204  # ~51 worked solutions a batch at worked_fraction 0.25, as many as 128 at 0.4
    lr: float = 3e-3
    warmup: int = 100
    corpus_size: int = 60_000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "corpus_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"pretrain.{name}={getattr(self, name)} must be positive.")
        if self.lr <= 0 or self.warmup < 0:
            raise ValueError(f"pretrain.lr={self.lr} must be positive and warmup={self.warmup} non-negative.")


@dataclass(frozen=True)
class RLConfig:
    steps: int = 40  # reward reaches ~0.93 by step 40
    prompts_per_step: int = 16
    group_size: int = 8  # samples per prompt; advantages are relative to the group's mean
    lr: float = 5e-4
    kl_coef: float = 0.05  # k3 estimator of KL(policy || base), per token; 0 disables
    temperature: float = 1.0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "group_size", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"rl.{name}={getattr(self, name)} must be positive.")
        if self.group_size < 2:
            raise ValueError(f"rl.group_size={self.group_size}: group-relative advantages need at least 2 samples per prompt.")
        if self.lr <= 0 or self.kl_coef < 0 or self.temperature <= 0:
            raise ValueError("rl.lr and rl.temperature must be positive and rl.kl_coef non-negative.")


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that determines a trained organism pair (with the seed)."""

    task: ArithConfig = field(default_factory=ArithConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    checkpoint_every: int = 100

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrganismConfig:
        sections = {"task": ArithConfig, "corpus": CorpusConfig, "model": ModelConfig, "pretrain": PretrainConfig, "rl": RLConfig}
        unknown = set(d) - set(sections) - {"checkpoint_every"}
        if unknown:
            raise ValueError(f"Unknown organism config section(s) {sorted(unknown)}: expected {sorted(sections)} and checkpoint_every.")
        kwargs: dict[str, Any] = {}
        for name, klass in sections.items():
            sub = d.get(name, {})
            known = {f.name for f in dataclasses.fields(klass)}
            bad = set(sub) - known
            if bad:
                raise ValueError(f"Unknown key(s) {sorted(bad)} in [{name}]: expected some of {sorted(known)}.")
            kwargs[name] = klass(**sub)
        if "checkpoint_every" in d:
            kwargs["checkpoint_every"] = int(d["checkpoint_every"])
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> OrganismConfig:
        try:
            with open(path, "rb") as f:
                return cls.from_dict(tomllib.load(f))
        except FileNotFoundError:
            raise FileNotFoundError(f"Organism config {path} does not exist.") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"Organism config {path} is not valid TOML: {e}") from e


# ---------------------------------------------------------------- data


def encode_examples(examples: list[Example], tok) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``labels`` (-100 on prompt and padding) for LM training."""
    rows, labels = [], []
    for ex in examples:
        p = tok(ex.prompt).input_ids
        c = tok(ex.completion, add_special_tokens=False).input_ids + [tok.eos_token_id]
        rows.append(p + c)
        labels.append([-100] * len(p) + c)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(l)] = torch.tensor(l)
    return ids, lab


def lm_loss(model, ids: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction=reduction)


def bucketed_lm_loss(model, batch: list[Example], tok, n_buckets: int = 8) -> torch.Tensor:
    """Mean token loss over ``batch``, run as length-sorted buckets so short direct answers are not padded to long solutions."""
    order = sorted(batch, key=lambda ex: len(ex.completion))
    size = -(-len(order) // n_buckets)
    total, count = 0.0, 0
    for i in range(0, len(order), size):
        ids, labels = encode_examples(order[i : i + size], tok)
        total = total + lm_loss(model, ids, labels, reduction="sum")
        count += int((labels[:, 1:] != -100).sum())
    return total / count


# ---------------------------------------------------------------- checkpoints


TRAINING_RECORD = "training.json"  # in each finished model directory: the settings it was trained with


def made_with(cfg: OrganismConfig, seed: int, rl_problems: int | None) -> dict[str, Any]:
    """Everything that determines a stage of a training run: the config, the seed and ``rl_problems`` (as JSON)."""
    return json.loads(json.dumps({"config": cfg.to_dict(), "seed": seed, "rl_problems": rl_problems}))


def check_made_with(what: Path, recorded: dict[str, Any] | None, wanted: dict[str, Any]) -> None:
    """Refuse to resume from, or reuse, ``what`` when it was made with other settings; the error names them."""
    from latentreason.stage import StageMismatch, describe, differences

    if recorded is None:
        raise StageMismatch(f"{what} records no training settings (made by an older latentreason?), so it cannot be resumed safely. Choose another --out.")
    diffs = differences(recorded, wanted)
    if diffs:
        raise StageMismatch(f"{what} was made with other settings: {describe(diffs)}. Resume with the settings it was made with, or choose another --out.")


def _save_checkpoint(ckpt: Path, model, opt: torch.optim.Optimizer, step: int, made: dict[str, Any] | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(ckpt / "state.safetensors", tensors)
    write_json(ckpt / "progress.json", {"step": step, "state_sha256": sha256_file(ckpt / "state.safetensors"), "made_with": made})


def _load_checkpoint(ckpt: Path, model, opt: torch.optim.Optimizer, made: dict[str, Any] | None = None) -> int:
    if not (ckpt / "progress.json").exists():
        return 0
    prog = read_json(ckpt / "progress.json")
    if made is not None:
        check_made_with(ckpt, prog.get("made_with"), made)
    tensors = load_tensors(ckpt / "state.safetensors", expected_sha256=prog["state_sha256"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    log.info("resumed %s at step %d", ckpt, prog["step"])
    return int(prog["step"])


def _save_model_dir(model, tok, out: Path, made: dict[str, Any] | None = None) -> None:
    """Write an HF model directory atomically: into a temporary sibling, then rename."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if made is not None:
        write_json(tmp / TRAINING_RECORD, made)
    for f in tmp.iterdir():
        f.chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


# ---------------------------------------------------------------- stages


def pretrain(cfg: OrganismConfig, tok, seed: int, ckpt: Path, progress: bool = True, made: dict[str, Any] | None = None):
    """Pretrain the base model; resumes from ``ckpt`` (only a checkpoint ``made`` with the same settings)."""
    task = ArithTask(cfg.task)
    model = build_model(cfg.model, tok, seed=seed)
    model.train()
    pc = cfg.pretrain
    opt = torch.optim.AdamW(model.parameters(), lr=pc.lr, weight_decay=0.01, betas=(0.9, 0.98))
    start = _load_checkpoint(ckpt, model, opt, made)
    corpus = make_corpus(task, pc.corpus_size, cfg.corpus, seed=seed)
    bar = tqdm(range(start, pc.steps), desc="pretrain", initial=start, total=pc.steps, disable=not progress)
    for step in bar:
        rng = random.Random(f"pretrain:{seed}:{step}")
        batch = [corpus[rng.randrange(len(corpus))] for _ in range(pc.batch_size)]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, pc.steps, pc.lr, pc.warmup)
        opt.zero_grad(set_to_none=True)
        loss = bucketed_lm_loss(model, batch, tok)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < pc.steps:
            _save_checkpoint(ckpt, model, opt, step + 1, made)
    model.eval()
    return model


def sequence_logprobs(model, ids: torch.Tensor, prompt_len: int, gen_mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities ``[batch, n_new]`` of the generated tokens ``ids[:, prompt_len:]``."""
    logits = model(input_ids=ids).logits[:, prompt_len - 1 : -1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    return lp * gen_mask


def grpo(cfg: OrganismConfig, base, tok, seed: int, ckpt: Path, problems: list[Problem] | None = None, desc: str = "rl", progress: bool = True, made: dict[str, Any] | None = None):
    """Group-relative policy gradient from ``base`` on ``problems`` (default: the train split)."""
    task = ArithTask(cfg.task)
    rc = cfg.rl
    policy = build_model(cfg.model, tok, seed=seed)
    policy.load_state_dict(base.state_dict())
    ref = base
    ref.eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=rc.lr, weight_decay=0.0, betas=(0.9, 0.98))
    start = _load_checkpoint(ckpt, policy, opt, made)
    pool = problems if problems is not None else task.sample("train", 20_000, seed=seed + 1, distinct=False)
    bar = tqdm(range(start, rc.steps), desc=desc, initial=start, total=rc.steps, disable=not progress)
    for step in bar:
        rng = random.Random(f"rl:{seed}:{step}")
        chosen = [pool[rng.randrange(len(pool))] for _ in range(rc.prompts_per_step)]
        prompts = [task.prompt(p) for p in chosen for _ in range(rc.group_size)]
        ids = tok(prompts, return_tensors="pt").input_ids  # fixed width: no padding
        policy.eval()
        out = decode(policy, ids, max_new_tokens=rc.max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=rc.temperature, seed=seed * 100_003 + step)
        completions = out.completions(tok)
        reward = torch.tensor([float(task.grade(p, c)) for p, c in zip([p for p in chosen for _ in range(rc.group_size)], completions)])
        r = reward.view(rc.prompts_per_step, rc.group_size)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
        n_new = out.tokens.shape[1]
        gen_mask = (torch.arange(n_new)[None, :] < out.lengths[:, None]).float()
        full = torch.cat([ids, out.tokens], dim=1)
        policy.train()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, rc.steps, rc.lr, 0)
        lp = sequence_logprobs(policy, full, ids.shape[1], gen_mask)
        loss = -(adv[:, None] * lp).sum() / (len(prompts) * rc.max_new_tokens)
        if rc.kl_coef > 0:
            with torch.no_grad():
                ref_lp = sequence_logprobs(ref, full, ids.shape[1], gen_mask)
            d = (ref_lp - lp) * gen_mask
            kl = (torch.exp(d) - d - 1) * gen_mask
            loss = loss + rc.kl_coef * kl.sum() / (len(prompts) * rc.max_new_tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        bar.set_postfix(reward=f"{reward.mean().item():.2f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < rc.steps:
            _save_checkpoint(ckpt, policy, opt, step + 1, made)
    policy.eval()
    return policy


def train_organism(out: str | os.PathLike, cfg: OrganismConfig | None = None, seed: int = 0, rl_problems: int | None = None, single_problem: bool = True, progress: bool = True) -> Path:
    """Train a pair into ``out``: ``base/``, ``post_rl/`` and (by default) ``single_problem_rl/``.

    ``rl_problems=N`` restricts the main RL run to N training problems. Finished stages
    are kept, interrupted ones resume from their last checkpoint.
    """
    cfg = cfg or OrganismConfig()
    if "OMP_NUM_THREADS" not in os.environ:  # respect a user's choice; else small models run best on <= 4 threads
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    if rl_problems is not None and rl_problems <= 0:
        raise ValueError(f"--rl-problems={rl_problems} must be a positive number of training problems.")
    from latentreason.stage import locked

    out = Path(out)
    made = made_with(cfg, seed, rl_problems)
    with locked(out):  # one training run per directory at a time
        return _train(out, cfg, seed, rl_problems, single_problem, progress, made)


def _finished(d: Path, made: dict[str, Any]) -> bool:
    """Whether the model directory ``d`` is finished; a finished one must have been trained with ``made``."""
    if not (d / "config.json").exists():
        return False
    check_made_with(d, read_json(d / TRAINING_RECORD) if (d / TRAINING_RECORD).exists() else None, made)
    return True


def _train(out: Path, cfg: OrganismConfig, seed: int, rl_problems: int | None, single_problem: bool, progress: bool, made: dict[str, Any]) -> Path:
    ours = {"base", "post_rl", "single_problem_rl", PAIR_MANIFEST, ".checkpoints"}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not (p.name.startswith(".") and p.name.endswith(".tmp")) and p.name != ".lock")
    if foreign:
        raise ValueError(f"{out} holds files that are not an organism being trained ({', '.join(foreign[:5])}); nothing there is touched. Choose a new or empty --out.")
    man_path = out / PAIR_MANIFEST
    if man_path.exists():
        old = read_json(man_path)
        check_made_with(man_path, {"config": old.get("config"), "seed": old.get("seed"), "rl_problems": old.get("rl_problems")}, made)
    for sub in ("base", "post_rl", "single_problem_rl"):
        if (out / sub).exists() and not (out / sub / "config.json").exists():
            raise ValueError(f"{out / sub} is not a model directory this training wrote; nothing there is touched. Choose a new or empty --out.")
    started = time.time()
    tok = build_tokenizer()
    task = ArithTask(cfg.task)
    ckpts = out / ".checkpoints"
    stages: dict[str, float] = {}
    earlier = read_json(man_path).get("train_seconds", {}) if man_path.exists() else {}  # keep the timing of stages finished before

    t0 = time.time()
    if _finished(out / "base", made):
        base = load_model(str(out / "base"))
    else:
        base = pretrain(cfg, tok, seed, ckpts / "pretrain", progress, made)
        _save_model_dir(base, tok, out / "base", made)
    stages["pretrain_s"] = _stage_time(earlier, "pretrain_s", t0)

    t0 = time.time()
    if not _finished(out / "post_rl", made):
        probs = task.sample("train", rl_problems, seed=seed + 7, distinct=False) if rl_problems else None
        post = grpo(cfg, base, tok, seed, ckpts / "rl", problems=probs, desc="rl", progress=progress, made=made)
        _save_model_dir(post, tok, out / "post_rl", made)
    stages["rl_s"] = _stage_time(earlier, "rl_s", t0)

    models = {"base": "base", "post_rl": "post_rl"}
    if single_problem and rl_problems is None:
        t0 = time.time()
        if not _finished(out / "single_problem_rl", made):
            one = single_training_problem(task, seed)
            single = grpo(cfg, base, tok, seed, ckpts / "single_rl", problems=[one], desc="rl (1 problem)", progress=progress, made=made)
            _save_model_dir(single, tok, out / "single_problem_rl", made)
        stages["single_problem_rl_s"] = _stage_time(earlier, "single_problem_rl_s", t0)
        models["single_problem_rl"] = "single_problem_rl"

    hashes = {f"{d}/model.safetensors": sha256_file(out / d / "model.safetensors") for d in models.values()}
    write_json(
        man_path,
        {
            "kind": PAIR_KIND,
            "name": out.name,
            "task": "arith",
            "task_config": dataclasses.asdict(cfg.task),
            "models": models,
            "config": cfg.to_dict(),
            "seed": seed,
            "rl_problems": rl_problems,
            "single_problem": single_training_problem(task, seed).expr if "single_problem_rl" in models else None,
            "corpus_sha256": corpus_hash(cfg, seed),
            "hashes": hashes,
            "latentreason_version": __version__,
            "torch_version": torch.__version__,
            "train_seconds": stages,
            "defaults": {"site": f"resid_post.{cfg.model.num_layers // 2}", "router_site": f"resid_post.{cfg.model.num_layers - 1}", "max_new_tokens": cfg.rl.max_new_tokens},
        },
    )
    shutil.rmtree(ckpts, ignore_errors=True)
    log.info("trained organism in %.0fs -> %s", time.time() - started, out)
    return out


def _stage_time(earlier: dict[str, float], key: str, t0: float) -> float:
    """Seconds the stage took; a stage skipped because it had finished before keeps its earlier time."""
    took = round(time.time() - t0, 1)
    return earlier[key] if key in earlier and took < 1.0 else took


def single_training_problem(task: ArithTask, seed: int) -> Problem:
    """The problem single-problem RL trains on: a mid-length training problem, fixed by the seed."""
    k = (task.config.min_k + task.config.max_k + 1) // 2
    for p in task.sample("train", 1000, seed=seed + 11):
        if len(p.digits) == k:
            return p
    return task.sample("train", 1, seed=seed + 11)[0]


def corpus_hash(cfg: OrganismConfig, seed: int) -> str:
    import hashlib

    h = hashlib.sha256()
    for ex in make_corpus(ArithTask(cfg.task), cfg.pretrain.corpus_size, cfg.corpus, seed=seed):
        h.update((ex.prompt + ex.completion).encode())
    return h.hexdigest()
