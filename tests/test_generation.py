"""The decode loop refuses prompts that do not fit the model's position window, before any forward."""

from __future__ import annotations

import logging

import pytest
import torch

from latentreason.generation import decode


def _decode(model, n_prompt: int, max_new_tokens: int):
    ids = torch.full((1, n_prompt), 5, dtype=torch.long)
    return decode(model, ids, max_new_tokens=max_new_tokens, eos_token_id=2, pad_token_id=0)


def test_prompt_longer_than_the_position_window_is_refused(organism):
    window = organism.base_model.config.max_position_embeddings  # 256
    with pytest.raises(ValueError, match=rf"A prompt of {window + 44} tokens is longer than the model's position window \({window} tokens, max_position_embeddings\)\. Shorten it"):
        _decode(organism.base_model, window + 44, 4)


def test_learned_position_model_refuses_generating_past_its_window(make_tiny):
    gpt2 = make_tiny("gpt2")  # n_positions 256: a position table that ends there
    with pytest.raises(ValueError, match=r"A prompt of 200 tokens plus max_new_tokens=100 needs 299 positions, but the model's window is 256 .* Lower max_new_tokens to at most 57"):
        _decode(gpt2, 200, 100)
    assert 1 <= _decode(gpt2, 200, 57).tokens.shape[1] <= 57  # exactly fills the window: runs


def test_rotary_model_generating_past_its_window_is_warned_about_not_refused(make_tiny, caplog):
    qwen = make_tiny("qwen2")
    with caplog.at_level(logging.WARNING, logger="latentreason.generation"):
        out = _decode(qwen, 250, 10)
    assert out.tokens.shape[0] == 1 and "needs 259 positions" in caplog.text
