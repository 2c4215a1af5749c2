import json
import subprocess
import sys

import pytest
import torch

import latentreason.organism.train as train_mod
from latentreason.organism.corpus import CorpusConfig, make_corpus
from latentreason.organism.evaluate import evaluate_pair
from latentreason.organism.model import ModelConfig, build_model
from latentreason.organism.tokenizer import build_tokenizer
from latentreason.organism.train import OrganismConfig, PretrainConfig, RLConfig, encode_examples, lm_loss, pretrain, train_organism
from latentreason.pair import load_pair
from latentreason.tasks.arith import ArithConfig, ArithTask

TINY = OrganismConfig(
    task=ArithConfig(max_k=3),
    corpus=CorpusConfig(worked_fraction=0.5),
    model=ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=64),
    pretrain=PretrainConfig(steps=200, batch_size=32, lr=1e-2, corpus_size=2000, warmup=5),  # enough for a few right answers, so RL groups differ
    rl=RLConfig(steps=2, prompts_per_step=8, group_size=4, max_new_tokens=24),
    checkpoint_every=20,
)

EVAL_KEYS = {"n", "base_greedy_acc", "base_forced_reasoning_acc", "base_forced_first_acc", "post_rl_mid_trace_choice_rate", "post_rl_greedy_acc", "base_sampled_acc", "post_rl_sampled_acc", "base_reasoning_rate", "post_rl_reasoning_rate", "base_strategy_uses", "post_rl_strategy_uses"}


def test_tokenizer_round_trips_every_organism_text(tmp_path):
    tok = build_tokenizer()
    text = "     3+4*2-7=S:       3+4=7*2-7\nM:    7*2=14=4-7\nD: 4-7=4+3=7\nA:7\n"
    enc = tok(text)
    assert enc.input_ids[0] == tok.bos_token_id and len(enc.input_ids) == len(text) + 1
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == text
    tok.save_pretrained(tmp_path)
    from transformers import PreTrainedTokenizerFast

    assert PreTrainedTokenizerFast.from_pretrained(tmp_path)(text).input_ids == enc.input_ids


def test_pretraining_lowers_loss(tmp_path):
    torch.manual_seed(0)
    tok = build_tokenizer()
    held = make_corpus(ArithTask(TINY.task), 64, TINY.corpus, seed=99, split="dev")
    ids, labels = encode_examples(held, tok)
    trained = pretrain(TINY, tok, 0, tmp_path / "ckpt", progress=False)
    with torch.no_grad():
        before = lm_loss(build_model(TINY.model, tok, seed=0), ids, labels).item()
        after = lm_loss(trained, ids, labels).item()
    assert after < 0.6 * before


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    cfg = TINY
    full = train_organism(tmp_path / "full", cfg, seed=1, single_problem=False, progress=False)
    calls = {"n": 0}
    real = train_mod.bucketed_lm_loss

    def crash_at_30(*a, **k):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "bucketed_lm_loss", crash_at_30)
    with pytest.raises(KeyboardInterrupt):
        train_organism(tmp_path / "resumed", cfg, seed=1, single_problem=False, progress=False)
    assert (tmp_path / "resumed" / ".checkpoints" / "pretrain" / "progress.json").exists()
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    monkeypatch.setattr(train_mod, "bucketed_lm_loss", real)
    train_organism(tmp_path / "resumed", cfg, seed=1, single_problem=False, progress=False)
    a, b = load_pair(full), load_pair(tmp_path / "resumed")
    for role in ("base", "post_rl"):
        sa, sb = a.model(role).state_dict(), b.model(role).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trained_pair_round_trips_and_evaluates(tmp_path):
    out = train_organism(tmp_path / "pair", TINY, seed=0, single_problem=True, progress=False)
    pair = load_pair(out)
    assert pair.fingerprint("base") != pair.fingerprint("post_rl")
    assert "single_problem_rl" in pair.extras
    man = json.loads((out / "pair.json").read_text())
    assert man["config"] == json.loads(json.dumps(TINY.to_dict())) and len(man["corpus_sha256"]) == 64 and man["seed"] == 0
    res = evaluate_pair(pair, n=20)
    assert EVAL_KEYS <= set(res)


def test_retraining_into_a_dir_with_another_config_is_refused(tmp_path):
    out = train_organism(tmp_path / "pair", TINY, seed=0, single_problem=False, progress=False)
    assert train_organism(out, TINY, seed=0, single_problem=False, progress=False) == out  # same settings: nothing to do
    with pytest.raises(ValueError, match="other settings: seed: 0 → 5"):
        train_organism(out, TINY, seed=5, single_problem=False, progress=False)


def test_bad_config_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[pretrain]\nsteps = -3\n")
    with pytest.raises(ValueError, match="steps=-3"):
        OrganismConfig.from_toml(bad)
    bad.write_text("[modle]\nhidden_size = 3\n")
    with pytest.raises(ValueError, match="modle"):
        OrganismConfig.from_toml(bad)
    bad.write_text("[task]\nops = ['^']\n")
    with pytest.raises(ValueError, match="Unknown op"):
        OrganismConfig.from_toml(bad)


def test_missing_or_foreign_pair_directories_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pair.json"):
        load_pair(tmp_path)
    with pytest.raises(FileNotFoundError, match="Cannot load pair"):
        load_pair(tmp_path / "nope")


def test_pair_whose_models_have_different_tokenizers_is_refused(tmp_path):
    out = train_organism(tmp_path / "pair", TINY, seed=0, single_problem=False, progress=False)
    tok_file = out / "post_rl" / "tokenizer.json"
    spec = json.loads(tok_file.read_text())
    spec["model"]["vocab"]["ZZ"] = len(spec["model"]["vocab"])
    tok_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="different tokenizers"):
        load_pair(out)


def test_shipped_pair_has_the_phenomenon(organism):
    res = evaluate_pair(organism, n=150, include_extras=False)
    assert res["base_reasoning_rate"] <= 0.10
    assert res["post_rl_reasoning_rate"] >= 0.90
    assert res["base_forced_reasoning_acc"] - res["base_greedy_acc"] >= 0.30
    assert res["post_rl_greedy_acc"] - res["base_greedy_acc"] >= 0.30
    # which strategy, mid-trace: the post-RL model uses all three and chooses after its first line,
    # and the base model forced only into its first line stops where the strategy switches
    assert all(res["post_rl_strategy_uses"][s] >= 0.3 for s in ("step", "difference", "multiply"))
    assert res["post_rl_mid_trace_choice_rate"] >= 0.3
    assert res["base_forced_reasoning_acc"] - res["base_forced_first_acc"] >= 0.2


def test_eval_cli_prints_one_json_object_and_errors_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "latentreason", "organism", "eval", "--n", "10", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert EVAL_KEYS <= set(json.loads(run.stdout))
    bad = subprocess.run([sys.executable, "-m", "latentreason", "organism", "eval", "--pair", str(tmp_path / "missing")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "Cannot load pair" in bad.stderr


def _crash_pretraining_at(monkeypatch, n: int):
    calls = {"n": 0}
    real = train_mod.bucketed_lm_loss

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "bucketed_lm_loss", crash)
    return real


def test_resuming_pretraining_with_another_seed_or_lr_is_refused(tmp_path, monkeypatch):
    import dataclasses

    real = _crash_pretraining_at(monkeypatch, 30)  # after the step-20 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_organism(tmp_path / "p", TINY, seed=0, single_problem=False, progress=False)
    monkeypatch.setattr(train_mod, "bucketed_lm_loss", real)
    with pytest.raises(ValueError, match=r"pretrain was made with other settings: seed: 0 → 1\..*another --out"):
        train_organism(tmp_path / "p", TINY, seed=1, single_problem=False, progress=False)
    ckpt = tmp_path / "p" / ".checkpoints" / "pretrain"
    assert json.loads((ckpt / "progress.json").read_text())["made_with"]["seed"] == 0
    slower = dataclasses.replace(TINY, pretrain=dataclasses.replace(TINY.pretrain, lr=1e-3))
    with pytest.raises(ValueError, match=r"config.pretrain.lr: 0.01 → 0.001"):
        train_organism(tmp_path / "p", slower, seed=0, single_problem=False, progress=False)
    assert not (tmp_path / "p" / "base").exists() and not (tmp_path / "p" / "pair.json").exists()


class Killed(Exception):
    """Stands for the process being killed (a plain exception, so a failing check fails one test, not the session)."""


def test_a_finished_base_of_another_seed_is_never_reused(tmp_path, monkeypatch):
    def no_rl(*a, **k):
        raise Killed

    monkeypatch.setattr(train_mod, "grpo", no_rl)  # killed after pretraining finished
    with pytest.raises(Killed):
        train_organism(tmp_path / "p", TINY, seed=0, single_problem=False, progress=False)
    with pytest.raises(ValueError, match=r"base was made with other settings: seed: 0 → 1"):
        train_organism(tmp_path / "p", TINY, seed=1, single_problem=False, progress=False)
    assert json.loads((tmp_path / "p" / "base" / "training.json").read_text())["seed"] == 0


def test_training_into_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not an organism being trained \(notes.txt\)"):
        train_organism(tmp_path, TINY, seed=0, single_problem=False, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
