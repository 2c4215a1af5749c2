"""Shared fixtures: seeded tiny random-weight models of real architectures, and the shipped organism."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models run fastest on one thread, and pytest -n 2 already uses both cores: more threads
# per worker oversubscribe the CPU (measured: a 1 ms forward became 60 ms). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def _tiny(arch: str, vocab: int = 64, layers: int = 3, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if arch == "qwen2":
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = Qwen2ForCausalLM(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=layers, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(arch)
    return model.eval()


@pytest.fixture(params=["qwen2", "llama", "gpt2"])
def tiny_model(request):
    """A seeded random-weight model of each supported architecture (3 layers, d_model 32)."""
    return _tiny(request.param)


@pytest.fixture
def make_tiny():
    return _tiny


@pytest.fixture(scope="session")
def organism():
    """The shipped organism pair (loaded once per test session)."""
    from latentreason.organism import load_default

    return load_default()
