"""The organism's character-level tokenizer, a real ``PreTrainedTokenizerFast``."""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
CHARS = string.digits + "+-*=:. \n" + string.ascii_uppercase + string.ascii_lowercase + ",;?!()'/"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; ``tok(text)`` prepends BOS; decoding concatenates."""
    vocab = {t: i for i, t in enumerate([PAD, BOS, EOS, UNK, *CHARS])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left", clean_up_tokenization_spaces=False
    )
