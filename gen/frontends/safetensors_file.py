"""Floating-point safetensors weights, read through the ``safetensors`` library as float32.

The library checks the header and every tensor's byte range against the file before anything is
read. numpy has no bfloat16, so a BF16 tensor is read as raw 16-bit words at the offsets of the
already checked header and widened exactly. Any problem raises :class:`ModelFormatError` naming
the file (and the tensor).
"""

import contextlib
import json

import numpy as np
from safetensors import SafetensorError, safe_open

from ...errors import ModelFormatError

__all__ = ["read_safetensors_header", "read_safetensors"]

_FLOATS = ("F32", "F16", "BF16")


@contextlib.contextmanager
def _opened(path):
    try:
        with safe_open(path, framework="numpy") as f:
            yield f
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the file: {e}") from None
    except SafetensorError as e:
        raise ModelFormatError(path, f"not a valid safetensors file: {e}") from None


def _dtype(path, f, name):
    dtype = f.get_slice(name).get_dtype()
    if dtype not in _FLOATS:
        raise ModelFormatError(path, "unsupported tensor dtype", field=name,
                               expected=" or ".join(_FLOATS), found=dtype)
    return dtype


def read_safetensors_header(path):
    """``{tensor name: (dtype, shape)}`` of ``path``; every dtype is checked to be F32, F16 or
    BF16."""
    with _opened(path) as f:
        names = f.keys()
        return {name: (_dtype(path, f, name), tuple(f.get_slice(name).get_shape()))
                for name in names}


def _bfloat16(f, names):
    """``{name: float32 array}`` of the BF16 tensors ``names`` (raw words shifted into place)."""
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
    out = {}
    for name in names:
        begin, end = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        words = np.frombuffer(f.read(end - begin), dtype="<u2").astype(np.uint32)
        out[name] = (words << 16).view(np.float32).reshape(header[name]["shape"])
    return out


def read_safetensors(path, names=None):
    """Read tensors of ``path`` (all, or those in ``names``) as float32 numpy arrays."""
    with _opened(path) as f:
        names = f.keys() if names is None else list(names)
        dtypes = {name: _dtype(path, f, name) for name in names}
        out = {name: f.get_tensor(name).astype(np.float32)
               for name, dtype in dtypes.items() if dtype != "BF16"}
        bf16 = [name for name, dtype in dtypes.items() if dtype == "BF16"]
        if bf16:
            with open(path, "rb") as raw:
                out.update(_bfloat16(raw, bf16))
    return {name: out[name] for name in names}
