"""A checked reader for the safetensors format (8-byte header length, JSON header, raw data).

Written by hand rather than through ``safetensors.safe_open`` so that every bound is checked
against the file size before anything is allocated, bfloat16 works without torch, and each
problem names the file and tensor. Nothing in the file is ever executed.
"""

import json
import os

import numpy as np

from ...errors import ModelFormatError

__all__ = ["read_safetensors_header", "read_safetensors"]

MAX_HEADER_BYTES = 100 * 1024 * 1024   # the format's own limit

_DTYPES = {"F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2), "BF16": (np.dtype("<u2"), 2)}


def read_safetensors_header(path):
    """Parse and check the header of ``path``: ``(entries, metadata, data_start)``.

    ``entries`` maps a tensor name to ``(dtype, shape, begin, end)`` with offsets relative to the
    data section; every range is checked to lie inside the file and match its shape.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFormatError(path, "file too short for a safetensors header",
                                       field="header length", expected="at least 8 bytes",
                                       found=f"{size} bytes")
            n = int.from_bytes(head, "little")
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise ModelFormatError(path, "safetensors header length exceeds the file",
                                       field="header length",
                                       expected=f"at most {min(MAX_HEADER_BYTES, size - 8)} bytes",
                                       found=n)
            text = f.read(n)
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the file: {e.strerror}") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(path, f"safetensors header is not valid JSON ({e})",
                               field="header") from None
    if not isinstance(header, dict):
        raise ModelFormatError(path, "safetensors header must be a JSON object", field="header",
                               expected="an object", found=type(header).__name__)
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    data_size = size - data_start
    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFormatError(path, "malformed tensor entry", field=name,
                                   expected="{dtype, shape, data_offsets}", found=repr(info)[:80])
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not (isinstance(shape, list)
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in shape)):
            raise ModelFormatError(path, "tensor shape must be a list of non-negative integers",
                                   field=name, expected="[rows, cols]", found=repr(shape)[:80])
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise ModelFormatError(path, "tensor data lies outside the file", field=name,
                                   expected=f"0 <= begin <= end <= {data_size}",
                                   found=repr(offsets)[:80])
        if dtype not in _DTYPES:
            raise ModelFormatError(path, "unsupported tensor dtype", field=name,
                                   expected=" or ".join(_DTYPES), found=dtype)
        count = int(np.prod(shape, dtype=object)) if shape else 1
        nbytes = count * _DTYPES[dtype][1]
        if offsets[1] - offsets[0] != nbytes:
            raise ModelFormatError(path, "tensor byte range does not match its shape and dtype",
                                   field=name, expected=f"{nbytes} bytes",
                                   found=f"{offsets[1] - offsets[0]} bytes")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    return entries, metadata, data_start


def read_safetensors(path, names=None):
    """Read tensors of ``path`` (all, or those in ``names``) as float32 numpy arrays."""
    entries, _, data_start = read_safetensors_header(path)
    wanted = entries if names is None else {n: entries[n] for n in names}
    out = {}
    with open(path, "rb") as f:
        for name, (dtype, shape, begin, end) in wanted.items():
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:
                raise ModelFormatError(path, "file ended inside tensor data", field=name,
                                       expected=f"{end - begin} bytes", found=f"{len(raw)} bytes")
            np_dtype, _ = _DTYPES[dtype]
            array = np.frombuffer(raw, dtype=np_dtype)
            if dtype == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            out[name] = array.astype(np.float32).reshape(shape)
    return out
