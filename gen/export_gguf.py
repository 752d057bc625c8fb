"""Write a :class:`~hardwire.gen.model.LoadedModel` as a GGUF file that llama.cpp loads.

The file has architecture ``llama``: every ``llama.*`` hyperparameter llama.cpp reads (context,
widths, head counts, RoPE base and dimension, RMSNorm epsilon, vocabulary size), float tensors
(F32, or F16 for the matrices) under llama.cpp's names, and the rows of ``wq``/``wk`` permuted
the way llama.cpp's ``convert_hf_to_gguf.py`` does, because llama.cpp rotates interleaved pairs
(2i, 2i+1) while the canonical model pairs i with i + head_dim/2. The tokenizer is written as a
SentencePiece-style ``llama`` vocabulary built from the model's pieces, enough for llama.cpp to
load it and print tokens; token ids are the contract, llama.cpp's own text tokenization of it is
not guaranteed to match the model's tokenizer. The output is a pure function of the model
(byte-identical on re-export).
"""

import numpy as np

from ..errors import ConfigError
from .model import tensor_names

__all__ = ["export_gguf", "export_permute", "llama_metadata", "tokenizer_metadata",
           "vocab_pieces", "model_tensors", "write_gguf_file", "TOKEN_NORMAL", "TOKEN_UNKNOWN",
           "TOKEN_CONTROL", "TOKEN_BYTE", "EXPORT_TYPES"]

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6
EXPORT_TYPES = ("F32", "F16")
SPIECE_SPACE = "\u2581"


def export_permute(w, n_heads):
    """llama.cpp's ``convert_hf_to_gguf`` permutation of q/k rows (half -> interleaved pairs).

    Undone by :func:`~hardwire.gen.frontends.gguf_reader.unpermute_rows`.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def llama_metadata(spec):
    """The ``llama.*`` keys of ``spec``, as ``{key: (gguf kind, value)}`` in a fixed order."""
    return {
        "llama.context_length": ("uint32", spec.max_seq_len),
        "llama.embedding_length": ("uint32", spec.dim),
        "llama.block_count": ("uint32", spec.n_layers),
        "llama.feed_forward_length": ("uint32", spec.ffn_dim),
        "llama.attention.head_count": ("uint32", spec.n_heads),
        "llama.attention.head_count_kv": ("uint32", spec.n_kv_heads),
        "llama.rope.dimension_count": ("uint32", spec.head_dim),
        "llama.rope.freq_base": ("float32", spec.rope_theta),
        "llama.attention.layer_norm_rms_epsilon": ("float32", spec.norm_eps),
    }


def tokenizer_metadata(tokens, token_types=None, *, bos_id=1, eos_id=2, extra=None):
    """``tokenizer.ggml.*`` keys of a SentencePiece-style (``llama``) vocabulary.

    Scores are ``-id`` (earlier pieces win SentencePiece merges); ``bos_id``/``eos_id`` of
    ``None`` leave the key out (llama.cpp then assumes 1 and 2). ``extra`` adds keys last.
    """
    meta = {
        "tokenizer.ggml.model": ("string", "llama"),
        "tokenizer.ggml.tokens": ("array", list(tokens)),
        "tokenizer.ggml.scores": ("array", [float(-i) for i in range(len(tokens))]),
    }
    if bos_id is not None:
        meta["tokenizer.ggml.bos_token_id"] = ("uint32", bos_id)
    if eos_id is not None:
        meta["tokenizer.ggml.eos_token_id"] = ("uint32", eos_id)
    if token_types is not None:
        meta["tokenizer.ggml.token_type"] = ("array", [int(t) for t in token_types])
    meta.update(extra or {})
    return meta


def vocab_pieces(tokenizer, spec):
    """``(tokens, token_types)`` of a SentencePiece-style vocabulary for ``tokenizer``'s pieces.

    Spaces become ``▁``; a one-character piece that is a control character (``\\n``) or empty
    becomes the byte token ``<0xNN>``; BOS/EOS ids are control tokens; ids past the tokenizer's
    pieces (padded embedding rows) get unique ``<unused_N>`` control tokens. Duplicate texts get
    a unique suffix so llama.cpp's text -> id map stays one-to-one.
    """
    pieces = list(tokenizer.pieces) if tokenizer is not None else []
    tokens, types, seen = [], [], set()
    for i in range(spec.vocab_size):
        piece = pieces[i] if i < len(pieces) else None
        if piece is None or i in (spec.bos_id, spec.eos_id):
            text = piece if piece else f"<unused_{i}>"
            kind = TOKEN_CONTROL
        elif len(piece.encode("utf-8")) == 1 and (piece < " " or piece == "\x7f"):
            text, kind = f"<0x{ord(piece):02X}>", TOKEN_BYTE
        elif piece == "":
            text, kind = f"<unused_{i}>", TOKEN_CONTROL
        else:
            text, kind = piece.replace(" ", SPIECE_SPACE), TOKEN_NORMAL
        if text in seen:
            text = f"{text}<dup_{i}>"
        seen.add(text)
        tokens.append(text)
        types.append(kind)
    return tokens, types


def model_tensors(spec, weights, *, qtype="F32", permute=True):
    """``{gguf name: (GGMLQuantizationType, stored array)}`` of canonical ``weights``, in order.

    Matrices whose input size is a multiple of ``qtype``'s block size are stored as ``qtype``
    (name or ``GGMLQuantizationType``); other matrices and all vectors stay F32, as llama.cpp
    does. ``wq``/``wk`` rows get :func:`export_permute` unless ``permute`` is false.
    """
    import gguf

    from .frontends.gguf_reader import gguf_tensor_name
    qtype = gguf.GGMLQuantizationType[qtype] if isinstance(qtype, str) else qtype
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    out = {}
    for name in tensor_names(spec):
        w = np.asarray(weights[name], dtype=np.float32)
        kind = name.rsplit(".", 1)[-1]
        if permute and kind in ("wq", "wk"):
            w = export_permute(w, spec.n_heads if kind == "wq" else spec.n_kv_heads)
        t = qtype if w.ndim == 2 and w.shape[1] % block == 0 else gguf.GGMLQuantizationType.F32
        out[gguf_tensor_name(name)] = (t, gguf.quants.quantize(np.ascontiguousarray(w), t))
    return out


def write_gguf_file(path, metadata, tensors, *, architecture="llama"):
    """Write ``metadata`` (``{key: (kind, value)}``, kind an ``add_<kind>`` method of
    ``gguf.GGUFWriter``) and ``tensors`` (``{name: (type, array)}``) to ``path`` in order."""
    import gguf
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, (kind, value) in metadata.items():
        getattr(writer, f"add_{kind}")(key, value)
    for name, (qtype, data) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_gguf(loaded, path, *, dtype="F32"):
    """Write ``loaded`` (a ``LoadedModel`` in either RoPE pairing) to ``path`` as GGUF.

    ``dtype`` is ``"F32"`` (exact) or ``"F16"`` (matrices rounded to half precision, vectors
    kept F32). Block-quantized tensors the model was loaded with are written as their float
    values. Returns ``path``.
    """
    if dtype not in EXPORT_TYPES:
        raise ConfigError(f"GGUF export type must be one of {', '.join(EXPORT_TYPES)}, "
                          f"not {dtype!r}")
    spec = loaded.spec
    # Interleaved-pairing weights already rotate (2i, 2i+1) like llama.cpp: no permutation.
    permute = spec.rope_pairing == "half"
    tokens, types = vocab_pieces(loaded.tokenizer, spec)
    extra = {"tokenizer.ggml.add_bos_token": ("bool", spec.bos_id is not None),
             "tokenizer.ggml.add_eos_token": ("bool", False),
             "tokenizer.ggml.add_space_prefix": ("bool", False)}
    metadata = {"general.name": ("string", spec.name),
                "general.file_type": ("uint32", 0 if dtype == "F32" else 1),
                **llama_metadata(spec),
                "llama.vocab_size": ("uint32", spec.vocab_size),
                **tokenizer_metadata(tokens, types, bos_id=spec.bos_id, eos_id=spec.eos_id,
                                     extra=extra)}
    write_gguf_file(path, metadata, model_tensors(spec, loaded.weights, qtype=dtype,
                                                  permute=permute))
    return path
