"""Fast quantizer test fixtures: seeded random ``LoadedModel``s built directly from numpy."""

import numpy as np

from hardwire.gen.model import BlockQuantized, LoadedModel, ModelSpec, Tokenizer, tensor_shapes

__all__ = ["random_spec", "random_loaded", "CharTokenizer", "block_q8_0"]


class CharTokenizer(Tokenizer):
    """One token per character of ``pieces``; unknown characters cannot be encoded."""

    def encode(self, text):
        index = {p: i for i, p in enumerate(self.pieces)}
        return [index[c] for c in text]


def random_spec(**overrides):
    base = dict(name="tiny", dim=24, n_layers=2, n_heads=3, n_kv_heads=1, head_dim=8, ffn_dim=40,
                vocab_size=29, max_seq_len=24)
    base.update(overrides)
    return ModelSpec(**base)


def random_loaded(seed=0, *, tokenizer=None, block_quantized=None, **overrides):
    """A Llama-shaped model with weights drawn so that logits are well spread (no near ties)."""
    spec = random_spec(**overrides)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in tensor_shapes(spec).items():
        if len(shape) == 1:
            w = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name in ("embed", "head"):
            w = rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        weights[name] = w.astype(np.float32)
    return LoadedModel(spec=spec, weights=weights, tokenizer=tokenizer, source="random.model",
                       format="float", block_quantized=block_quantized or {})


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
