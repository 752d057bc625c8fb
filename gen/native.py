"""hardwire's native model file (``.hwq``): a :class:`QuantizedModel` stored exactly.

The file is a safetensors file written and read by the ``safetensors`` library: integer tensors
(weights, group multipliers, per-row ``M`` and shift, norm gains, tables) plus float64 row scales,
and one ``__metadata__`` entry, ``"hardwire"``, holding JSON with the spec, formats, scalar
constants, scales, the tokenizer and the format version. The library lays tensors out by dtype
and name, JSON keys are sorted and nothing depends on the clock, so identical models give
identical bytes. The library checks the container; reading never executes anything and checks
every tensor and field; any problem raises :class:`ModelFormatError` naming the file and tensor or
field.

Tensor names: ``{linear}.values`` (int8), ``.group_mult`` (int16, grouped tensors only), ``.M``,
``.shift`` (int64), ``.row_scale`` (float64) for "embed", "layers.{i}.w*" and "head" (a tied head
stores no values or group multipliers: it shares the embedding's); ``{norm}.gain`` (int16);
``layers.{i}.silu`` (int8); ``rope.cos``/``rope.sin`` (int16); ``rsqrt``/``exp2`` (uint16).
"""

import json
import math

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ..errors import HardwireError, ModelFormatError
from ..sim import golden_ops as ops
from .model import ModelSpec, Tokenizer, tensor_shapes
from .quantize import MAX_INPUTS
from .quantized_model import (
    LAYER_LINEARS,
    LAYER_NORMS,
    WEIGHT_BITS,
    QLayer,
    QLinear,
    QNorm,
    QuantizedModel,
    weight_range,
)

__all__ = ["save_native", "load_native", "is_native", "native_bytes", "StoredTokenizer",
           "FORMAT", "VERSION", "SUFFIX"]

FORMAT = "hardwire-native"
VERSION = 1
SUFFIX = ".hwq"
_DTYPES = ("I8", "I16", "U16", "I64", "F64")   # the safetensors dtypes a native file holds
_WIDE = ("embed", "wo", "w2", "head")   # linears with int16 outputs
_OWN_FORMATS = {"int8": (127, 8), "int4": (7, 4), "ternary": (1, 2)}   # the quantizer's ranges


class StoredTokenizer(Tokenizer):
    """The tokenizer a native file carries: a Hugging Face ``tokenizer.json`` run by the
    ``tokenizers`` library, or (for other sources) the token pieces with greedy longest-match
    encoding (an approximation of the source's own algorithm that decodes back to the text)."""

    def __init__(self, *, pieces, hf_json=None):
        super().__init__(pieces)
        self.hf_json = hf_json
        self._tok = None
        if hf_json is not None:
            import tokenizers
            self._tok = tokenizers.Tokenizer.from_str(hf_json)
        self._index = {}
        for i, p in enumerate(self.pieces):
            if p:
                self._index.setdefault(p, i)
        self._longest = max((len(p) for p in self._index), default=1)

    def encode(self, text):
        """Token ids of ``text`` (no BOS/EOS)."""
        if self._tok is not None:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        ids, pos = [], 0
        while pos < len(text):
            for n in range(min(self._longest, len(text) - pos), 0, -1):
                i = self._index.get(text[pos:pos + n])
                if i is not None:
                    ids.append(i)
                    pos += n
                    break
            else:
                raise HardwireError(f"cannot encode {text[pos]!r}: no token holds it")
        return ids

    def decode(self, ids):
        """Text of ``ids``."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise HardwireError(f"token id {i} is outside the vocabulary "
                                    f"(expected 0..{self.vocab_size - 1})")
        if self._tok is not None:
            return self._tok.decode(ids, skip_special_tokens=False)
        return "".join(self.pieces[i] for i in ids)

    def to_json(self):
        """The ``tokenizer.json`` text this tokenizer runs, or None when it has only pieces."""
        return self.hf_json


def _tokenizer_meta(tokenizer):
    if tokenizer is None:
        return None
    to_json = getattr(tokenizer, "to_json", None)   # HFTokenizer and StoredTokenizer have it
    return {"pieces": list(tokenizer.pieces), "hf_json": to_json() if to_json else None}


def _flatten(qm):
    """``(metadata dict, {name: array})`` of ``qm``."""
    tensors, linears, norms = {}, {}, {}
    tied = qm.spec.tied_embeddings
    for name, q in qm.linears().items():
        if not (tied and name == "head"):
            tensors[name + ".values"] = q.values
            if q.group_mult is not None:
                tensors[name + ".group_mult"] = q.group_mult
        tensors[name + ".M"] = q.M
        tensors[name + ".shift"] = q.shift
        tensors[name + ".row_scale"] = q.row_scale
        linears[name] = {"bits": q.bits, "group_size": q.group_size, "out_bits": q.out_bits,
                         "source_format": q.source_format, "in_scale": q.in_scale,
                         "out_scale": q.out_scale}
    for name, n in qm.norms().items():
        tensors[name + ".gain"] = n.gain
        norms[name] = {"shift": n.shift, "eps_int": n.eps_int, "in_scale": n.in_scale,
                       "out_scale": n.out_scale}
    for i, layer in enumerate(qm.layers):
        tensors[f"layers.{i}.silu"] = layer.silu
    tensors.update({"rope.cos": qm.rope_cos, "rope.sin": qm.rope_sin, "rsqrt": qm.rsqrt,
                    "exp2": qm.exp2})
    meta = {"format": FORMAT, "version": VERSION, "spec": qm.spec.to_dict(),
            "weight_format": qm.weight_format, "group_size": qm.group_size,
            "context": qm.context, "calibration": qm.calibration, "scales": qm.scales,
            "linears": linears, "norms": norms,
            "layers": [{"M_att": layer.M_att, "s_att": layer.s_att, "M_h": layer.M_h,
                        "s_h": layer.s_h} for layer in qm.layers],
            "tokenizer": _tokenizer_meta(qm.tokenizer)}
    return meta, tensors


def native_bytes(qm):
    """The ``.hwq`` file contents of ``qm`` (what :func:`save_native` writes)."""
    meta, tensors = _flatten(qm)
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    # The library copies raw memory; QuantizedModel already holds C-contiguous arrays.
    return save(tensors, metadata={"hardwire": text})


def save_native(qm, path):
    """Write ``qm`` to ``path`` as a ``.hwq`` file (byte-identical for identical models)."""
    data = native_bytes(qm)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise HardwireError(f"{path}: cannot write the native model file: {e.strerror}") from None


def is_native(path):
    """Whether ``path`` is a native file: the ``.hwq`` suffix, or a safetensors file whose
    metadata names this format."""
    if str(path).endswith(SUFFIX):
        return True
    try:
        with safe_open(path, framework="numpy") as f:
            return json.loads((f.metadata() or {})["hardwire"])["format"] == FORMAT
    except (SafetensorError, OSError, ValueError, KeyError, TypeError):
        return False


class _Reader:
    """Checked access to one file's metadata fields and tensors (read by the library)."""

    def __init__(self, path):
        self.path = str(path)
        self.used = set()
        try:
            with safe_open(self.path, framework="numpy") as f:
                meta = (f.metadata() or {}).get("hardwire")
                names = f.keys()
                self.dtypes = {name: f.get_slice(name).get_dtype() for name in names}
                self.arrays = {name: f.get_tensor(name) for name, dtype in self.dtypes.items()
                               if dtype in _DTYPES}
        except OSError as e:
            self.fail(f"cannot read the file: {e}")
        except SafetensorError as e:
            self.fail(f"not a valid safetensors file: {e}")
        if meta is None:
            self.fail("not a hardwire native file: no hardwire metadata",
                      field="__metadata__.hardwire", expected="a JSON string", found="nothing")
        try:
            self.meta = json.loads(meta)
        except json.JSONDecodeError as e:
            self.fail(f"metadata is not valid JSON ({e})", field="__metadata__.hardwire")
        if not isinstance(self.meta, dict):
            self.fail("metadata must be a JSON object", field="__metadata__.hardwire")

    def fail(self, problem, field=None, expected=None, found=None):
        raise ModelFormatError(self.path, problem, field=field, expected=expected, found=found)

    def field(self, container, key, kind, where):
        if not isinstance(container, dict) or key not in container:
            self.fail("field missing", field=f"{where}{key}", expected=kind.__name__,
                      found="nothing")
        value = container[key]
        ok = (isinstance(value, int) and not isinstance(value, bool) if kind is int
              else isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) if kind is float
              else isinstance(value, kind))
        if not ok:
            self.fail("field has the wrong type", field=f"{where}{key}", expected=kind.__name__,
                      found=repr(value)[:60])
        return float(value) if kind is float else value

    def int_in(self, container, key, lo, hi, where):
        value = self.field(container, key, int, where)
        if not lo <= value <= hi:
            self.fail("field out of range", field=f"{where}{key}", expected=f"{lo}..{hi}",
                      found=value)
        return value

    def scale(self, container, key, where):
        value = self.field(container, key, float, where)
        if not value > 0:
            self.fail("scale must be positive", field=f"{where}{key}", expected="> 0",
                      found=value)
        return value

    def tensor(self, name, dtype, shape):
        if name not in self.dtypes:
            self.fail("tensor missing", field=name, expected=f"{dtype} {list(shape)}",
                      found="nothing")
        if self.dtypes[name] != dtype:
            self.fail("tensor has the wrong dtype", field=name, expected=dtype,
                      found=self.dtypes[name])
        array = self.arrays[name]
        if array.shape != tuple(shape):
            self.fail("tensor has the wrong shape", field=name, expected=list(shape),
                      found=list(array.shape))
        self.used.add(name)
        return array

    def check_range(self, name, array, lo, hi):
        if array.size and not (lo <= array.min() and array.max() <= hi):
            bad = array[(array < lo) | (array > hi)].ravel()[0]
            self.fail("tensor value out of range", field=name, expected=f"{lo}..{hi}",
                      found=bad.item())


def _load_linear(r, name, spec, shape, meta_linears, shared=None):
    where = f"linears.{name}."
    info = meta_linears.get(name) if isinstance(meta_linears, dict) else None
    if info is None:
        r.fail("field missing", field=f"linears.{name}", expected="an object", found="nothing")
    bits = r.field(info, "bits", int, where)
    if bits not in WEIGHT_BITS:
        r.fail("unsupported weight width", field=where + "bits", expected=WEIGHT_BITS,
               found=bits)
    group_size = info.get("group_size")
    if group_size is not None:
        group_size = r.int_in(info, "group_size", 1, shape[1], where)
    out_bits = r.field(info, "out_bits", int, where)
    expected_out = 16 if name.split(".")[-1] in _WIDE else 8
    if out_bits != expected_out:
        r.fail("wrong output width", field=where + "out_bits", expected=expected_out,
               found=out_bits)
    out = shape[0]
    if shape[1] > MAX_INPUTS:
        r.fail("too many inputs for the accumulator bound of docs/numerics.md", field=name,
               expected=f"at most {MAX_INPUTS}", found=shape[1])
    source_format = r.field(info, "source_format", str, where)
    limits = weight_range(bits)
    if source_format in _OWN_FORMATS:
        q, own_bits = _OWN_FORMATS[source_format]
        if bits != own_bits:
            r.fail("weight width does not match the format", field=where + "bits",
                   expected=f"{own_bits} for {source_format}", found=bits)
        limits = (-q, q)
    if shared is not None:
        values, group_mult = shared.values, shared.group_mult
        if (group_mult is None) != (group_size is None):
            r.fail("a tied head must share the embedding's groups", field=where + "group_size",
                   expected=shared.group_size, found=group_size)
    else:
        values = r.tensor(name + ".values", "I8", shape)
        r.check_range(name + ".values", values, *limits)
        group_mult = None
        if group_size is not None:
            n_groups = -(-shape[1] // group_size)
            group_mult = r.tensor(name + ".group_mult", "I16", (out, n_groups))
            r.check_range(name + ".group_mult", group_mult, -(1 << 14), 1 << 14)
    M = r.tensor(name + ".M", "I64", (out,))
    if ((M != 0) & ((M < 1 << 14) | (M >= 1 << 15))).any():
        r.fail("multiplier out of range", field=name + ".M", expected="0 or 16384..32767",
               found=int(M[(M != 0) & ((M < 1 << 14) | (M >= 1 << 15))][0]))
    shift = r.tensor(name + ".shift", "I64", (out,))
    r.check_range(name + ".shift", shift, 1, 62)
    row_scale = r.tensor(name + ".row_scale", "F64", (out,))
    bad = ~(np.isfinite(row_scale) & (row_scale >= 0))
    if bad.any():
        row = int(np.argmax(bad))
        r.fail(f"row scales must be finite and non-negative (row {row})",
               field=name + ".row_scale", expected=">= 0", found=float(row_scale[row]))
    return QLinear(values=values, bits=bits, group_size=group_size, group_mult=group_mult, M=M,
                   shift=shift, out_bits=out_bits, source_format=source_format,
                   row_scale=row_scale, in_scale=r.scale(info, "in_scale", where),
                   out_scale=r.scale(info, "out_scale", where))


def _load_norm(r, name, d, meta_norms):
    where = f"norms.{name}."
    info = meta_norms.get(name) if isinstance(meta_norms, dict) else None
    if info is None:
        r.fail("field missing", field=f"norms.{name}", expected="an object", found="nothing")
    return QNorm(gain=r.tensor(name + ".gain", "I16", (d,)),
                 shift=r.int_in(info, "shift", -15, 22, where),
                 eps_int=r.int_in(info, "eps_int", 1, (1 << 40) - 1, where),
                 in_scale=r.scale(info, "in_scale", where),
                 out_scale=r.scale(info, "out_scale", where))


def load_native(path):
    """Read a ``.hwq`` file back into the :class:`QuantizedModel` it was saved from.

    Raises :class:`ModelFormatError` naming the file and the tensor or field for a wrong format
    or version, missing or extra tensors, wrong dtypes or shapes, out-of-range values, bad
    metadata or a truncated file.
    """
    r = _Reader(path)
    meta = r.meta
    if meta.get("format") != FORMAT:
        r.fail("not a hardwire native file", field="format", expected=FORMAT,
               found=meta.get("format"))
    if meta.get("version") != VERSION:
        r.fail("unsupported native file version", field="version", expected=VERSION,
               found=meta.get("version"))
    spec_dict = r.field(meta, "spec", dict, "")
    try:
        spec = ModelSpec.from_dict(spec_dict, source=r.path)
    except TypeError as e:
        r.fail(f"architecture fields incomplete ({e})", field="spec")
    except ModelFormatError as e:
        r.fail(e.problem, field=f"spec.{e.field}", expected=e.expected, found=e.found)
    context = r.int_in(meta, "context", 1, 1 << 24, "")
    group_size = meta.get("group_size")
    if group_size is not None:
        group_size = r.int_in(meta, "group_size", 1, 1 << 31, "")
    scales = r.field(meta, "scales", dict, "")
    for key in scales:
        r.scale(scales, key, "scales.")
    if "resid" not in scales:
        r.fail("field missing", field="scales.resid", expected="float", found="nothing")
    linears_meta = r.field(meta, "linears", dict, "")
    norms_meta = r.field(meta, "norms", dict, "")
    layers_meta = r.field(meta, "layers", list, "")
    if len(layers_meta) != spec.n_layers:   # before anything per layer: n_layers may be absurd
        r.fail("wrong number of layers", field="layers", expected=spec.n_layers,
               found=len(layers_meta))
    shapes = tensor_shapes(spec)
    embed = _load_linear(r, "embed", spec, shapes["embed"], linears_meta)
    layers = []
    for i, info in enumerate(layers_meta):
        p, where = f"layers.{i}.", f"layers[{i}]."
        parts = {k: _load_linear(r, p + k, spec, shapes[p + k], linears_meta)
                 for k in LAYER_LINEARS}
        parts.update({k: _load_norm(r, p + k, spec.dim, norms_meta) for k in LAYER_NORMS})
        layers.append(QLayer(**parts, M_att=r.int_in(info, "M_att", 0, (1 << 15) - 1, where),
                             s_att=r.int_in(info, "s_att", 1, 62, where),
                             silu=r.tensor(p + "silu", "I8", (256,)),
                             M_h=r.int_in(info, "M_h", 0, (1 << 15) - 1, where),
                             s_h=r.int_in(info, "s_h", 1, 62, where)))
    norm = _load_norm(r, "norm", spec.dim, norms_meta)
    head = _load_linear(r, "head", spec, (spec.vocab_size, spec.dim), linears_meta,
                        shared=embed if spec.tied_embeddings else None)
    half = spec.head_dim // 2
    cos = r.tensor("rope.cos", "I16", (context, half))
    sin = r.tensor("rope.sin", "I16", (context, half))
    for name, table in (("rope.cos", cos), ("rope.sin", sin)):
        r.check_range(name, table, -(1 << 14), 1 << 14)
    rsqrt = r.tensor("rsqrt", "U16", (768,))
    exp2 = r.tensor("exp2", "U16", (256,))
    for name, table, expected in (("rsqrt", rsqrt, ops.rsqrt_table()),
                                  ("exp2", exp2, ops.exp2_table())):
        if not np.array_equal(table, expected):
            r.fail("table differs from docs/numerics.md", field=name,
                   expected="the spec's table", found="other values")
    extra = sorted(set(r.dtypes) - r.used)
    if extra:
        r.fail("unexpected tensor", field=extra[0], expected="only the tensors of this model",
               found=extra[0])
    tokenizer = None
    tok_meta = meta.get("tokenizer")
    if tok_meta is not None:
        pieces = r.field(tok_meta, "pieces", list, "tokenizer.")
        hf_json = tok_meta.get("hf_json")
        if len(pieces) != spec.vocab_size or not all(isinstance(p, str) for p in pieces):
            r.fail("tokenizer pieces do not match the vocabulary", field="tokenizer.pieces",
                   expected=f"{spec.vocab_size} strings", found=len(pieces))
        try:
            tokenizer = StoredTokenizer(pieces=pieces, hf_json=hf_json)
        except Exception as e:   # the tokenizers library raises its own exception types
            r.fail(f"tokenizer cannot be read ({e})", field="tokenizer.hf_json")
    return QuantizedModel(
        spec=spec, weight_format=r.field(meta, "weight_format", str, ""), group_size=group_size,
        context=context, embed=embed, layers=tuple(layers), norm=norm, head=head, rope_cos=cos,
        rope_sin=sin, rsqrt=rsqrt, exp2=exp2, scales=scales,
        calibration=r.field(meta, "calibration", str, ""), tokenizer=tokenizer)
