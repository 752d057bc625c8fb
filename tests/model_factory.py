"""Builders of tiny model files for tests (not collected: no ``test_`` prefix).

- :func:`tiny_hf_model`: a seeded random ``transformers.LlamaForCausalLM`` saved as safetensors.
- :func:`write_gguf`: a ``llama`` GGUF file (any type ``gguf.quants.quantize`` writes), with
  llama.cpp's q/k export permutation applied.
- :func:`write_llama2c` / :func:`write_llama2c_tokenizer`: llama2.c v0 checkpoint and
  ``tokenizer.bin``.
"""

import json
import struct

import numpy as np

from hardwire.gen import export_gguf

__all__ = ["CHARS", "tiny_hf_model", "char_tokenizer_json", "canonical_weights", "export_permute",
           "spm_vocab", "write_gguf", "write_llama2c", "write_llama2c_tokenizer"]

export_permute = export_gguf.export_permute

CHARS = (" etaoinshrdlucmfwygpbvkxjqz.,;:!?'ETAOINSHRDLUCMFWYGPBVKXJQZ\n0123456789"
         "()-[]{}<>/|@#$%^&*+=~`\"")


def char_tokenizer_json(path, vocab):
    """Write a character-level ``tokenizer.json`` of ``vocab`` tokens: <unk>, <s>, </s>, chars."""
    from tokenizers import Tokenizer, decoders, models
    chars = ["<unk>", "<s>", "</s>", *CHARS][:vocab]
    t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[],
                             unk_token="<unk>"))
    t.add_special_tokens(["<unk>", "<s>", "</s>"])
    t.decoder = decoders.Fuse()
    t.save(str(path))


def tiny_hf_model(tmp_path, *, dim=48, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=80,
                  vocab=61, ctx=37, tied=False, seed=0, transformers_style=5, rope_theta=10000.0,
                  norm_eps=1e-5, max_shard_size=None, tokenizer=True, eos=2):
    """Save a random seeded ``LlamaForCausalLM`` (all parameters, norms included, random) in
    ``tmp_path`` and return ``(path, torch_model)``.

    ``transformers_style=4`` rewrites ``config.json`` the 4.x way (top-level ``rope_theta``,
    ``rope_scaling: null``); ``max_shard_size`` (e.g. ``"20KB"``) writes sharded weights.
    """
    import torch
    import transformers
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=ffn_dim,
        num_hidden_layers=n_layers, num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads, max_position_embeddings=ctx, tie_word_embeddings=tied,
        rms_norm_eps=norm_eps, bos_token_id=1, eos_token_id=eos,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.eval()
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(tmp_path, safe_serialization=True, **kwargs)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    if transformers_style == 4:
        rope = config.pop("rope_parameters")
        config["rope_theta"] = rope["rope_theta"]
        config["rope_scaling"] = None
        config["transformers_version"] = "4.46.0"
    config_path.write_text(json.dumps(config, indent=2))
    if tokenizer:
        char_tokenizer_json(tmp_path / "tokenizer.json", vocab)
    return tmp_path, model


def canonical_weights(source):
    """``(spec, {canonical name: float32 array})`` of a ``LoadedModel`` or ``LlamaForCausalLM``."""
    if hasattr(source, "spec"):
        return source.spec, {k: np.asarray(v, dtype=np.float32) for k, v in source.weights.items()}
    from hardwire.gen.frontends.huggingface import hf_tensor_name
    from hardwire.gen.model import ModelSpec, tensor_names
    c = source.config
    spec = ModelSpec(name="torch", dim=c.hidden_size, n_layers=c.num_hidden_layers,
                     n_heads=c.num_attention_heads, n_kv_heads=c.num_key_value_heads,
                     head_dim=c.head_dim, ffn_dim=c.intermediate_size, vocab_size=c.vocab_size,
                     max_seq_len=c.max_position_embeddings,
                     rope_theta=float(c.rope_parameters["rope_theta"]), norm_eps=c.rms_norm_eps,
                     tied_embeddings=c.tie_word_embeddings, bos_id=1, eos_id=2)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in source.state_dict().items()}
    return spec, {n: state[hf_tensor_name(n)] for n in tensor_names(spec)}


def spm_vocab(n):
    """``(tokens, token_types)``: a SentencePiece-style vocabulary of ``n`` >= 8 tokens.

    <unk>/<s>/</s> (control), byte tokens for ``\\n`` and ``!``, ``▁`` words and single letters.
    """
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x21>", "\u2581"]
    words = ["\u2581the", "\u2581a", "he", "th", "in", "an", "\u2581t", "er", "\u2581and"]
    tokens += words + list("etaoinshrdlucmfwygpbvkxjqz.,")
    tokens = tokens[:n]
    tokens += [f"x{i}" for i in range(n - len(tokens))]
    types = [2, 3, 3, 6, 6] + [1] * (n - 5)
    return tokens, types


def write_gguf(path, source, *, qtype="F32", tokens=None, token_types=None, metadata=None,
               drop=(), extra_tensors=None, raw=None, permute=True):
    """Write ``source`` (a ``LoadedModel`` in half pairing, or a ``LlamaForCausalLM``) as GGUF.

    Matrices whose input size is a multiple of ``qtype``'s block size are stored as ``qtype``
    (name or ``GGMLQuantizationType``); others and all vectors stay F32, as llama.cpp does.
    ``metadata`` overrides or adds keys (a value ``None`` deletes the key), ``drop`` leaves tensors
    out, ``extra_tensors`` adds float32 ones, ``raw`` maps a GGUF name to ``(type, array)`` stored
    as given (uint8 blocks for quantized types). Returns ``{gguf name: (type, stored array)}``.
    """
    import gguf

    spec, weights = canonical_weights(source)
    if tokens is None:
        tokens, token_types = spm_vocab(spec.vocab_size)
    meta = {**export_gguf.llama_metadata(spec),
            **export_gguf.tokenizer_metadata(tokens, token_types)}
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, tuple) else (_kind(value), value)
    architecture = meta.pop("general.architecture", ("string", "llama"))[1]
    stored = {}
    for gname, (t, data) in export_gguf.model_tensors(spec, weights, qtype=qtype,
                                                      permute=permute).items():
        if gname in drop:
            continue
        if gname in (raw or {}):
            t, data = raw[gname]
            t = gguf.GGMLQuantizationType[t] if isinstance(t, str) else t
        stored[gname] = (t, data)
    tensors = dict(stored)
    for gname, data in (extra_tensors or {}).items():
        tensors[gname] = (gguf.GGMLQuantizationType.F32, np.asarray(data, dtype=np.float32))
    export_gguf.write_gguf_file(path, meta, tensors, architecture=architecture)
    return stored


def _kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "uint32"
    if isinstance(value, float):
        return "float32"
    if isinstance(value, str):
        return "string"
    return "array"


def write_llama2c(path, source, *, shared=None, permute=True, header=None, truncate=0):
    """Write ``source`` as a llama2.c v0 checkpoint; returns the weights as stored (canonical).

    q/k rows get the export permutation (half -> interleaved pairs, like llama2.c's
    ``export.py`` does for Hugging Face models) unless ``permute`` is false. ``shared`` defaults
    to the source's tied flag. ``header`` overrides header fields; ``truncate`` drops bytes.
    """
    spec, weights = canonical_weights(source)
    shared = spec.tied_embeddings if shared is None else shared
    stored = dict(weights)
    for i in range(spec.n_layers):
        for kind, nh in (("wq", spec.n_heads), ("wk", spec.n_kv_heads)):
            if permute:
                stored[f"layers.{i}.{kind}"] = export_permute(weights[f"layers.{i}.{kind}"], nh)
    fields = {"dim": spec.dim, "hidden_dim": spec.ffn_dim, "n_layers": spec.n_layers,
              "n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads,
              "vocab_size": spec.vocab_size if shared else -spec.vocab_size,
              "seq_len": spec.max_seq_len}
    fields.update(header or {})
    layer = [[stored[f"layers.{i}.{k}"] for i in range(spec.n_layers)]
             for k in ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3")]
    half = spec.head_dim // 2
    freqs = 1.0 / spec.rope_theta ** (np.arange(half) * 2 / spec.head_dim)
    angles = np.outer(np.arange(spec.max_seq_len), freqs)
    parts = [stored["embed"], *[np.stack(group) for group in layer], stored["norm"],
             np.cos(angles), np.sin(angles)]
    if not shared:
        parts.append(stored["head"] if "head" in stored else stored["embed"])
    blob = struct.pack("<7i", *fields.values()) + b"".join(
        np.ascontiguousarray(p, dtype="<f4").tobytes() for p in parts)
    path.write_bytes(blob[:len(blob) - truncate])
    if shared:
        stored.pop("head", None)
    return stored


def write_llama2c_tokenizer(path, pieces, scores=None, *, max_len=None):
    """Write llama2.c's ``tokenizer.bin`` from ``pieces`` (str or bytes) and ``scores``."""
    raw = [p.encode("utf-8") if isinstance(p, str) else p for p in pieces]
    scores = [0.0] * len(raw) if scores is None else scores
    out = struct.pack("<i", max(len(p) for p in raw) if max_len is None else max_len)
    for p, s in zip(raw, scores, strict=True):
        out += struct.pack("<fi", s, len(p)) + p
    path.write_bytes(out)
