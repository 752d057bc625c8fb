"""Fast quantizer test fixtures: seeded random ``LoadedModel``s built directly from numpy."""

import numpy as np

from hardwire.gen.model import BlockQuantized, Tokenizer
from hardwire.gen.synthetic import random_model, random_spec

__all__ = ["random_spec", "random_loaded", "CharTokenizer", "block_q8_0"]


class CharTokenizer(Tokenizer):
    """One token per character of ``pieces``; unknown characters cannot be encoded."""

    def encode(self, text):
        index = {p: i for i, p in enumerate(self.pieces)}
        return [index[c] for c in text]


def random_loaded(seed=0, *, tokenizer=None, block_quantized=None, **overrides):
    """A Llama-shaped model with weights drawn so that logits are well spread (no near ties)."""
    return random_model(random_spec(**overrides), seed, tokenizer=tokenizer,
                        block_quantized=block_quantized)


def block_q8_0(w, group_size=32, *, signed_scales=False):
    """A Q8_0-like :class:`BlockQuantized` of ``w``; ``signed_scales`` flips every other block's
    sign (Q4_0/Q5_0 files carry negative block scales)."""
    out, n = w.shape
    blocks = w.reshape(out, n // group_size, group_size).astype(np.float64)
    scales = np.abs(blocks).max(axis=2) / 127
    if signed_scales:
        scales[:, 1::2] *= -1
    safe = np.where(scales != 0, scales, 1)
    values = np.clip(np.round(blocks / safe[..., None]), -127, 127).astype(np.int8)
    return BlockQuantized(values=values.reshape(out, n), scales=scales.astype(np.float32),
                          bits=8, group_size=group_size, source_type="Q8_0")
