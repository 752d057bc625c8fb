"""llama2.c version-0 ("legacy") checkpoints and their ``tokenizer.bin``.

Layout (``export.py`` ``legacy_export``): seven int32 ``dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len`` (a negative ``vocab_size`` means a separate classifier is stored
at the end), then float32 tensors: token embedding, all ``rms_att``, all ``wq``, ``wk``, ``wv``,
``wo``, all ``rms_ffn``, ``w1``, ``w2``, ``w3``, ``rms_final``, ``freq_cis_real``,
``freq_cis_imag`` (skipped: we compute RoPE ourselves) and the optional classifier. llama2.c
rotates interleaved pairs, so the weights are kept as they are with ``rope_pairing="interleaved"``.
The file size must match the header exactly.
"""

import os
from pathlib import Path

import numpy as np

from ...errors import ModelFormatError
from ..model import MAX_DIMENSION, LoadedModel, ModelSpec
from ..tokenizer import Llama2cTokenizer

__all__ = ["load_llama2c", "read_llama2c_tokenizer", "llama2c_layout"]

HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                 "seq_len")
HEADER_BYTES = 4 * len(HEADER_FIELDS)
MAX_PIECE_BYTES = 1 << 16
_V1_MAGIC = 0x616B3432   # "ak42": llama2.c's version-1/2 exports


def llama2c_layout(header, *, path="llama2.c checkpoint"):
    """``[(name, shape)]`` of the tensors that follow ``header`` (a dict of the 7 fields)."""
    for f in HEADER_FIELDS:
        value = header[f]
        lo = -MAX_DIMENSION if f == "vocab_size" else 1
        if not lo <= value <= MAX_DIMENSION or value == 0:
            raise ModelFormatError(path, "header field out of range", field=f,
                                   expected=f"an integer in 1..{MAX_DIMENSION}"
                                   + (" (negative: separate classifier)"
                                      if f == "vocab_size" else ""), found=value)
    dim, hidden, layers = header["dim"], header["hidden_dim"], header["n_layers"]
    heads, kv_heads, seq = header["n_heads"], header["n_kv_heads"], header["seq_len"]
    vocab = abs(header["vocab_size"])
    if dim % heads:
        raise ModelFormatError(path, "dim must be a multiple of n_heads", field="n_heads",
                               expected=f"a divisor of {dim}", found=heads)
    if heads % kv_heads:
        raise ModelFormatError(path, "n_heads must be a multiple of n_kv_heads",
                               field="n_kv_heads", expected=f"a divisor of {heads}",
                               found=kv_heads)
    head_dim = dim // heads
    if head_dim % 2:
        raise ModelFormatError(path, "RoPE needs an even head dimension (dim / n_heads)",
                               field="n_heads", expected="dim / n_heads even", found=head_dim)
    kv_dim = kv_heads * head_dim
    layout = [("token_embedding", (vocab, dim)), ("rms_att", (layers, dim)),
              ("wq", (layers, dim, dim)), ("wk", (layers, kv_dim, dim)),
              ("wv", (layers, kv_dim, dim)), ("wo", (layers, dim, dim)),
              ("rms_ffn", (layers, dim)), ("w1", (layers, hidden, dim)),
              ("w2", (layers, dim, hidden)), ("w3", (layers, hidden, dim)),
              ("rms_final", (dim,)), ("freq_cis_real", (seq, head_dim // 2)),
              ("freq_cis_imag", (seq, head_dim // 2))]
    if header["vocab_size"] < 0:
        layout.append(("wcls", (vocab, dim)))
    return layout


def _read_header(path, size):
    if size < HEADER_BYTES:
        raise ModelFormatError(path, "file too short for a llama2.c header", field="header",
                               expected=f"at least {HEADER_BYTES} bytes", found=f"{size} bytes")
    raw = np.fromfile(path, dtype="<i4", count=len(HEADER_FIELDS))
    if int(raw[0]) == _V1_MAGIC:
        raise ModelFormatError(path, "llama2.c version-1/2 exports are not supported; export "
                               "with `export.py --version 0` (legacy_export)", field="magic",
                               expected="a version-0 header", found="ak42 magic")
    return {f: int(v) for f, v in zip(HEADER_FIELDS, raw, strict=True)}


def load_llama2c(path, *, tokenizer_path=None, name=None):
    """Load a llama2.c v0 checkpoint (and ``tokenizer.bin`` beside it or at ``tokenizer_path``).

    The spec uses llama2.c's fixed conventions: RoPE theta 10000, RMSNorm eps 1e-5, BOS id 1,
    EOS id 2 (when the vocabulary has them), interleaved RoPE pairs.
    """
    path = Path(path)
    size = os.path.getsize(path)
    header = _read_header(path, size)
    layout = llama2c_layout(header, path=path)
    expected = HEADER_BYTES + 4 * sum(int(np.prod(s, dtype=object)) for _, s in layout)
    if size != expected:
        raise ModelFormatError(path, "file size does not match the header", field="file size",
                               expected=f"{expected} bytes for header {header}",
                               found=f"{size} bytes")
    data = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    tensors, pos = {}, 0
    for tensor, shape in layout:
        n = int(np.prod(shape))
        tensors[tensor] = data[pos:pos + n].reshape(shape).astype(np.float32)
        pos += n
    vocab, dim = tensors["token_embedding"].shape
    spec = ModelSpec(
        name=name or path.stem, dim=dim, n_layers=header["n_layers"], n_heads=header["n_heads"],
        n_kv_heads=header["n_kv_heads"], head_dim=dim // header["n_heads"],
        ffn_dim=header["hidden_dim"], vocab_size=vocab, max_seq_len=header["seq_len"],
        rope_theta=10000.0, norm_eps=1e-5, tied_embeddings="wcls" not in tensors,
        rope_pairing="interleaved", bos_id=1 if vocab > 1 else None,
        eos_id=2 if vocab > 2 else None)
    weights = {"embed": tensors["token_embedding"], "norm": tensors["rms_final"]}
    ours = {"attn_norm": "rms_att", "wq": "wq", "wk": "wk", "wv": "wv", "wo": "wo",
            "ffn_norm": "rms_ffn", "w1": "w1", "w2": "w2", "w3": "w3"}
    for i in range(spec.n_layers):
        for canonical, theirs in ours.items():
            weights[f"layers.{i}.{canonical}"] = tensors[theirs][i]
    if "wcls" in tensors:
        weights["head"] = tensors["wcls"]
    if tokenizer_path is None and (path.parent / "tokenizer.bin").is_file():
        tokenizer_path = path.parent / "tokenizer.bin"
    tokenizer = None
    if tokenizer_path is not None:
        tokenizer = read_llama2c_tokenizer(tokenizer_path, vocab_size=vocab)
    return LoadedModel(spec=spec, weights=weights, tokenizer=tokenizer, source=str(path),
                       format="llama2c")


def read_llama2c_tokenizer(path, *, vocab_size):
    """Read llama2.c's ``tokenizer.bin``: int32 max_token_length, then per token a float32 score,
    an int32 length and that many bytes. The file must hold exactly ``vocab_size`` tokens."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the tokenizer: {e.strerror}") from None
    if len(blob) < 4:
        raise ModelFormatError(path, "file too short for a llama2.c tokenizer",
                               field="max_token_length", expected="4 bytes",
                               found=f"{len(blob)} bytes")
    max_len = int.from_bytes(blob[:4], "little", signed=True)
    if not 0 < max_len <= MAX_PIECE_BYTES:
        raise ModelFormatError(path, "header field out of range", field="max_token_length",
                               expected=f"1..{MAX_PIECE_BYTES}", found=max_len)
    pieces, scores, pos = [], [], 4
    for i in range(vocab_size):
        if pos + 8 > len(blob):
            raise ModelFormatError(path, "file ended before the vocabulary did",
                                   field=f"token {i}", expected=f"{vocab_size} tokens",
                                   found=f"{i} tokens")
        score = float(np.frombuffer(blob, dtype="<f4", count=1, offset=pos)[0])
        n = int.from_bytes(blob[pos + 4:pos + 8], "little", signed=True)
        if not 0 <= n <= max_len or pos + 8 + n > len(blob):
            raise ModelFormatError(path, "token length out of range", field=f"token {i}",
                                   expected=f"0..{min(max_len, len(blob) - pos - 8)} bytes",
                                   found=n)
        if not np.isfinite(score):
            raise ModelFormatError(path, "token score is not finite", field=f"token {i}",
                                   expected="a finite number", found=score)
        pieces.append(blob[pos + 8:pos + 8 + n])
        scores.append(score)
        pos += 8 + n
    if pos != len(blob):
        raise ModelFormatError(path, "file holds more than the model's vocabulary",
                               field="vocab_size", expected=f"{pos} bytes for {vocab_size} tokens",
                               found=f"{len(blob)} bytes")
    return Llama2cTokenizer(pieces, scores, source=path)
