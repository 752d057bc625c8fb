"""GGUF files (llama.cpp) of architecture ``llama``, read with the ``gguf`` package.

Float tensors (F32, F16, BF16) load as float32. The symmetric block formats whose integers map
exactly onto our scheme — Q8_0, Q4_0, Q5_0 (blocks of 32, ``w = d * q``) and TQ1_0/TQ2_0
(ternary, blocks of 256) — are kept as :class:`~hardwire.gen.model.BlockQuantized` *and*
dequantized into ``weights``. Q4_1/Q5_1 and the K-quants (Q2_K..Q6_K) have offsets or nested
scales, so they are only dequantized. GGUF stores the rows of ``wq``/``wk`` permuted for
interleaved RoPE; they are un-permuted here, so the model comes out in Hugging Face ``"half"``
pairing.
"""

import math
import os
import struct
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError
from ..model import (
    MAX_DIMENSION,
    BlockQuantized,
    LoadedModel,
    ModelSpec,
    check_finite,
    first_missing,
    tensor_names,
    tensor_shapes,
)
from ..tokenizer import PieceTokenizer

__all__ = ["load_gguf", "gguf_tensor_name", "unpermute_rows", "KEPT_TYPES", "FLOAT_ONLY_TYPES"]

# name: (bits, group size); codes are stored with an offset (Q4_0: q - 8) that is removed
KEPT_TYPES = {"Q8_0": (8, 32), "Q4_0": (4, 32), "Q5_0": (5, 32), "TQ1_0": (2, 256),
              "TQ2_0": (2, 256)}
FLOAT_TYPES = ("F32", "F16", "BF16")
FLOAT_ONLY_TYPES = ("Q4_1", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
GGUF_MAGIC = b"GGUF"

_LAYER_MAP = {"attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
              "wo": "attn_output", "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w3": "ffn_up",
              "w2": "ffn_down"}


def gguf_tensor_name(name):
    """The GGUF tensor name of canonical tensor ``name`` (``layers.0.w1`` -> ``blk.0.ffn_gate``)."""
    if name == "embed":
        return "token_embd.weight"
    if name == "norm":
        return "output_norm.weight"
    if name == "head":
        return "output.weight"
    _, index, kind = name.split(".")
    return f"blk.{index}.{_LAYER_MAP[kind]}.weight"


def unpermute_rows(rows, n_heads):
    """Row order that undoes llama.cpp's export permutation of a ``rows``-row q/k matrix.

    ``w[unpermute_rows(rows, nh)]`` equals
    ``w.reshape(nh, rows // nh // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)``.
    """
    return np.arange(rows).reshape(n_heads, rows // n_heads // 2, 2).swapaxes(1, 2).reshape(rows)


def _checked_reader_class():
    """``gguf.GGUFReader`` that checks each tensor's type and byte range before mapping it."""
    import gguf

    class CheckedReader(gguf.GGUFReader):
        def __init__(self, path):
            self._hw_path = path
            super().__init__(path)

        def _build_tensors(self, start_offs, fields):
            for field in fields:
                _, name_data, _, dims, raw_dtype, offset = field.parts
                name = bytes(name_data).decode("utf-8", errors="replace")
                try:
                    qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
                except ValueError:
                    raise ModelFormatError(self._hw_path, "unknown GGML tensor type", field=name,
                                           expected="a type known to the gguf package",
                                           found=int(raw_dtype[0])) from None
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                count = math.prod(int(d) for d in dims)
                if any(int(d) > MAX_DIMENSION for d in dims) or not len(dims) \
                        or int(dims[0]) % block:
                    raise ModelFormatError(
                        self._hw_path, "tensor dimensions out of range", field=name,
                        expected=f"1 or more dims <= {MAX_DIMENSION}, rows of a multiple of "
                        f"{block} ({qtype.name} blocks)", found=[int(d) for d in dims])
                begin = start_offs + int(offset[0])
                end = begin + count // block * type_size
                if end > len(self.data):
                    raise ModelFormatError(self._hw_path, "tensor data lies beyond the end of "
                                           "the file", field=name,
                                           expected=f"bytes {begin}..{end}",
                                           found=f"a {len(self.data)}-byte file")
            super()._build_tensors(start_offs, fields)

    return CheckedReader


def _open(path):
    """``gguf.GGUFReader`` on ``path`` after checking the fixed header against the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelFormatError(path, "not a GGUF file", field="magic",
                               expected="b'GGUF' and a 24-byte header", found=repr(head[:4]))
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise ModelFormatError(path, "unsupported GGUF version", field="version",
                               expected="2 or 3", found=version)
    # A tensor record takes at least 8+4+8+4+8 bytes and a key/value at least 8+4+1: counts
    # that cannot fit in the file are refused before the reader loops over them.
    if n_tensors * 32 + n_kv * 13 > size:
        raise ModelFormatError(path, "header counts exceed the file size",
                               field="tensor_count/kv_count",
                               expected=f"records fitting in {size} bytes",
                               found=f"{n_tensors} tensors, {n_kv} keys")
    try:
        reader = _checked_reader_class()(path)
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, UnicodeDecodeError,
            MemoryError) as e:
        raise ModelFormatError(path, "corrupt or truncated GGUF metadata: a declared length, "
                               "count or type does not fit the file "
                               f"({type(e).__name__}: {e})", field="structure") from None
    if reader.byte_order != "I":
        raise ModelFormatError(path, "big-endian GGUF files are not supported", field="version",
                               expected="little-endian", found="big-endian")
    return reader


class _Meta:
    def __init__(self, reader, path):
        self._reader, self._path = reader, path

    def get(self, key, default=None, *, kind=None):
        field = self._reader.get_field(key)
        if field is None:
            return default
        try:
            value = field.contents()
        except (UnicodeDecodeError, IndexError, ValueError) as e:
            raise ModelFormatError(self._path, f"unreadable metadata ({e})", field=key) from None
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelFormatError(self._path, "metadata has the wrong type", field=key,
                                   expected="an integer", found=repr(value)[:80])
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value)):
            raise ModelFormatError(self._path, "metadata has the wrong type", field=key,
                                   expected="a finite number", found=repr(value)[:80])
        return value

    def dimension(self, key, default=None):
        value = self.get(key, default, kind=int)
        if value is None:
            raise ModelFormatError(self._path, "required metadata missing", field=key,
                                   expected="a positive integer", found="nothing")
        if not 0 < value <= MAX_DIMENSION:
            raise ModelFormatError(self._path, "dimension out of range", field=key,
                                   expected=f"1..{MAX_DIMENSION}", found=value)
        return value


def _spec(meta, path, name, tensors):
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ModelFormatError(path, "unsupported architecture", field="general.architecture",
                               expected="'llama'", found=repr(arch))
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", "", None):
        raise ModelFormatError(path, "RoPE scaling is not supported",
                               field="llama.rope.scaling.type", expected="'none'",
                               found=repr(scaling))
    dim = meta.dimension("llama.embedding_length")
    n_heads = meta.dimension("llama.attention.head_count")
    n_kv = meta.dimension("llama.attention.head_count_kv", n_heads)
    head_dim = meta.dimension("llama.attention.key_length",
                              dim // n_heads if dim % n_heads == 0 else None)
    rope_dim = meta.get("llama.rope.dimension_count", head_dim, kind=int)
    if rope_dim != head_dim:
        raise ModelFormatError(path, "partial RoPE is not supported",
                               field="llama.rope.dimension_count", expected=head_dim,
                               found=rope_dim)
    value_dim = meta.get("llama.attention.value_length", head_dim, kind=int)
    if value_dim != head_dim:
        raise ModelFormatError(path, "value heads must be as wide as key heads",
                               field="llama.attention.value_length", expected=head_dim,
                               found=value_dim)
    embd = tensors.get("token_embd.weight")
    rows = int(embd.shape[-1]) if embd is not None and len(embd.shape) == 2 else None
    vocab = meta.get("llama.vocab_size", rows, kind=int)
    if vocab is None or not 0 < vocab <= MAX_DIMENSION:
        raise ModelFormatError(path, "vocabulary size unknown or out of range",
                               field="tokenizer.ggml.tokens", expected=f"1..{MAX_DIMENSION}",
                               found=vocab)
    theta = meta.get("llama.rope.freq_base", 10000.0, kind=float)
    eps = meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5, kind=float)
    for key, value in (("llama.rope.freq_base", theta),
                       ("llama.attention.layer_norm_rms_epsilon", eps)):
        if value <= 0:
            raise ModelFormatError(path, "must be positive", field=key, expected="> 0",
                                   found=value)
    ids = {}
    for key in ("bos", "eos"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id", kind=int)
        if value is not None and not 0 <= value < vocab:
            raise ModelFormatError(path, "token id outside the vocabulary",
                                   field=f"tokenizer.ggml.{key}_token_id",
                                   expected=f"0..{vocab - 1}", found=value)
        ids[key] = value
    try:
        return ModelSpec(
            name=name or Path(path).stem, dim=dim,
            n_layers=meta.dimension("llama.block_count"), n_heads=n_heads, n_kv_heads=n_kv,
            head_dim=head_dim, ffn_dim=meta.dimension("llama.feed_forward_length"),
            vocab_size=vocab, max_seq_len=meta.dimension("llama.context_length"),
            rope_theta=float(theta), norm_eps=float(eps),
            tied_embeddings="output.weight" not in tensors, rope_pairing="half",
            bos_id=ids["bos"], eos_id=ids["eos"])
    except ModelFormatError as e:   # ModelSpec names the model, not the file: re-aim it
        raise ModelFormatError(path, e.problem, field=_META_KEYS.get(e.field, e.field),
                               expected=e.expected, found=e.found) from None


_META_KEYS = {"n_kv_heads": "llama.attention.head_count_kv",
              "head_dim": "llama.attention.key_length"}


def _block_values(raw, type_name, rows, cols):
    """Integer codes (``int8 [rows, cols]``) and float32 scales of a kept block format."""
    import gguf
    bits, group = KEPT_TYPES[type_name]
    qtype = gguf.GGMLQuantizationType[type_name]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.ascontiguousarray(raw).reshape(-1, type_size)
    if type_name in ("Q8_0", "Q4_0", "Q5_0"):
        scales = blocks[:, :2].copy().view("<f2").astype(np.float32)
        # The dequantizer returns d * (q - offset); dividing by a unit scale recovers q - offset.
        unit = blocks.copy()
        unit[:, :2] = np.frombuffer(np.float16(1.0).tobytes(), dtype=np.uint8)
    else:
        scales = blocks[:, -2:].copy().view("<f2").astype(np.float32)
        unit = blocks.copy()
        unit[:, -2:] = np.frombuffer(np.float16(1.0).tobytes(), dtype=np.uint8)
    with np.errstate(all="ignore"):
        values = gguf.quants.dequantize(unit, qtype).reshape(rows, cols)
    return values, scales.reshape(rows, cols // block), bits, group


def _read_tensor(tensor, shape, path, gguf_name):
    """``(float32 array [rows, cols] or [n], BlockQuantized or None)`` of one GGUF tensor."""
    import gguf
    type_name = tensor.tensor_type.name
    dims = tuple(int(d) for d in reversed(tensor.shape.tolist()))   # GGUF lists ne0 first
    if dims != shape:
        raise ModelFormatError(path, "tensor has the wrong shape", field=gguf_name,
                               expected=shape, found=dims)
    raw = np.asarray(tensor.data)
    if type_name in FLOAT_TYPES:
        if type_name == "BF16":
            array = (raw.reshape(-1).view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.reshape(-1).astype(np.float32)
        return array.reshape(shape).copy(), None
    if type_name not in KEPT_TYPES and type_name not in FLOAT_ONLY_TYPES:
        raise ModelFormatError(path, "unsupported tensor type", field=gguf_name,
                               expected=" ".join(FLOAT_TYPES + tuple(KEPT_TYPES)
                                                 + FLOAT_ONLY_TYPES), found=type_name)
    if len(shape) != 2:
        raise ModelFormatError(path, "block-quantized vectors are not supported",
                               field=gguf_name, expected="F32/F16/BF16", found=type_name)
    with np.errstate(all="ignore"):   # corrupt scales give NaN/Inf, refused below by name
        array = gguf.quants.dequantize(np.ascontiguousarray(raw), tensor.tensor_type)
    array = np.asarray(array, dtype=np.float32).reshape(shape)
    if type_name not in KEPT_TYPES:
        return array, None
    codes, scales, bits, group = _block_values(raw, type_name, *shape)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if type_name.startswith("TQ"):
        lo, hi = -1, 1
    if codes.min(initial=0) < lo or codes.max(initial=0) > hi:
        raise ModelFormatError(path, "block codes out of range for the format", field=gguf_name,
                               expected=f"{lo}..{hi}",
                               found=f"{codes.min()}..{codes.max()} ({type_name})")
    if not np.isfinite(scales).all():
        raise ModelFormatError(path, "block scale is NaN/Inf", field=gguf_name,
                               expected="finite scales", found=type_name)
    kept = BlockQuantized(values=codes.astype(np.int8), scales=scales, bits=bits,
                          group_size=group, source_type=type_name)
    return array, kept


def load_gguf(path, *, name=None):
    """Load a ``llama`` GGUF file as a :class:`LoadedModel` (``rope_pairing="half"``).

    Tied output when ``output.weight`` is absent. The tokenizer comes from
    ``tokenizer.ggml.tokens`` (see :class:`~hardwire.gen.tokenizer.PieceTokenizer` for its
    greedy encoder); a file without tokens has no tokenizer.
    """
    path = str(path)
    reader = _open(path)
    tensors = {t.name: t for t in reader.tensors}
    meta = _Meta(reader, path)
    spec = _spec(meta, path, name, tensors)
    missing = first_missing(spec, lambda n: gguf_tensor_name(n) in tensors)
    if missing is not None:   # before anything per tensor: llama.block_count may be absurd
        raise ModelFormatError(path, "tensor missing", field=gguf_tensor_name(missing),
                               expected="present", found="nothing")
    shapes = tensor_shapes(spec)
    wanted = {gguf_tensor_name(n): n for n in tensor_names(spec)}
    for gguf_name in tensors:
        if gguf_name not in wanted:
            raise ModelFormatError(path, "tensor does not belong to a Llama decoder hardwire "
                                   "can map", field=gguf_name, expected="only Llama weights "
                                   "without biases or RoPE factors", found=gguf_name)
    weights, kept = {}, {}
    for gguf_name, canonical in wanted.items():
        array, block = _read_tensor(tensors[gguf_name], shapes[canonical], path, gguf_name)
        check_finite(array, path, gguf_name)   # index as stored, before un-permuting q/k rows
        kind = canonical.rsplit(".", 1)[-1]
        if kind in ("wq", "wk"):
            order = unpermute_rows(array.shape[0], spec.n_heads if kind == "wq"
                                   else spec.n_kv_heads)
            array = array[order]
            if block is not None:
                block = BlockQuantized(values=block.values[order], scales=block.scales[order],
                                       bits=block.bits, group_size=block.group_size,
                                       source_type=block.source_type)
        weights[canonical] = np.ascontiguousarray(array, dtype=np.float32)
        if block is not None:
            kept[canonical] = block
    tokenizer = _tokenizer(meta, path, spec)
    return LoadedModel(spec=spec, weights=weights, tokenizer=tokenizer, source=path,
                       format="gguf", block_quantized=kept)


def _tokenizer(meta, path, spec):
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ModelFormatError(path, "must be a list of strings", field="tokenizer.ggml.tokens",
                               expected="strings", found=type(tokens).__name__)
    if len(tokens) > spec.vocab_size:
        raise ModelFormatError(path, "more tokens than embedding rows",
                               field="tokenizer.ggml.tokens",
                               expected=f"at most {spec.vocab_size}", found=len(tokens))
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None and (not isinstance(types, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in types)):
        raise ModelFormatError(path, "must be a list of integers",
                               field="tokenizer.ggml.token_type", expected="integers",
                               found=repr(types)[:80])
    return PieceTokenizer(tokens, source=path, model=meta.get("tokenizer.ggml.model", "llama"),
                          token_types=types,
                          bos_id=spec.bos_id, eos_id=spec.eos_id)
