"""Seeded random Llama-shaped models: test fixtures and the models of the scaling benchmark."""

import numpy as np

from .model import LoadedModel, ModelSpec, tensor_shapes

__all__ = ["random_spec", "random_model"]

_BASE = dict(name="tiny", dim=24, n_layers=2, n_heads=3, n_kv_heads=1, head_dim=8, ffn_dim=40,
             vocab_size=29, max_seq_len=24)


def random_spec(**overrides):
    """A small :class:`ModelSpec`; keyword arguments replace its fields."""
    return ModelSpec(**{**_BASE, **overrides})


def random_model(spec, seed=0, *, tokenizer=None, block_quantized=None):
    """A float32 :class:`LoadedModel` of shape ``spec`` with weights drawn so that logits are well
    spread (no near ties): norms ~ 1 ± 0.2, embedding and head standard normal, other matrices
    scaled by 1/sqrt(fan-in)."""
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
