import json

import numpy as np
import pytest
from hardwire.gen.native import (
    StoredTokenizer,
    _flatten,
    is_native,
    load_native,
    native_bytes,
    save_native,
)
from hardwire.gen.quantize import quantize
from hardwire.sim.golden import GoldenModel
from quant_helpers import CharTokenizer, random_loaded

from hardwire.errors import ModelFormatError


@pytest.fixture(scope="module", params=["int8", "int4-g8-tied"])
def qm(request):
    if request.param == "int8":
        pieces = [chr(ord("a") + i) for i in range(29)]
        return quantize(random_loaded(0, tokenizer=CharTokenizer(pieces)))
    return quantize(random_loaded(1, tied_embeddings=True), weights="int4", group_size=8)


def _assert_same(a, b):
    meta_a, tensors_a = _flatten(a)
    meta_b, tensors_b = _flatten(b)
    assert meta_a == meta_b
    assert tensors_a.keys() == tensors_b.keys()
    for name in tensors_a:
        assert tensors_a[name].dtype == tensors_b[name].dtype, name
        np.testing.assert_array_equal(tensors_a[name], tensors_b[name], err_msg=name)


def test_round_trip_exact(qm, tmp_path):
    path = tmp_path / "m.hwq"
    save_native(qm, path)
    back = load_native(path)
    _assert_same(qm, back)
    assert back.spec == qm.spec and back.scales == qm.scales
    assert native_bytes(back) == path.read_bytes()
    assert GoldenModel(back).generate([1, 2], 8) == GoldenModel(qm).generate([1, 2], 8)
    if qm.spec.tied_embeddings:
        assert back.head.values is back.embed.values
    else:
        assert back.tokenizer.decode(back.tokenizer.encode("abc")) == "abc"


def test_bytes_identical_and_plain_safetensors(qm, tmp_path):
    save_native(qm, tmp_path / "a.hwq")
    save_native(qm, tmp_path / "b.hwq")
    assert (tmp_path / "a.hwq").read_bytes() == (tmp_path / "b.hwq").read_bytes()
    from safetensors.numpy import load_file
    tensors = load_file(tmp_path / "a.hwq")
    np.testing.assert_array_equal(tensors["layers.0.wq.values"], qm.layers[0].wq.values)
    assert tensors["rsqrt"].dtype == np.uint16
    assert is_native(tmp_path / "a.hwq")
    (tmp_path / "x.bin").write_bytes(b"\x00" * 16)
    assert not is_native(tmp_path / "x.bin")


def test_hf_tokenizer_travels(tmp_path):
    from hardwire.gen.tokenizer import HFTokenizer
    from model_factory import char_tokenizer_json
    char_tokenizer_json(tmp_path / "tokenizer.json", 29)
    qm = quantize(random_loaded(0, tokenizer=HFTokenizer(tmp_path / "tokenizer.json")))
    save_native(qm, tmp_path / "m.hwq")
    back = load_native(tmp_path / "m.hwq")
    assert isinstance(back.tokenizer, StoredTokenizer) and back.tokenizer.hf_json is not None
    assert back.tokenizer.encode("tea") == qm.tokenizer.encode("tea")
    assert back.tokenizer.pieces == qm.tokenizer.pieces


# --- corruption: every class names the file and the field -------------------------------------

def _split(data):
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def _join(header, body):
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def _edit_meta(data, change):
    header, body = _split(data)
    meta = json.loads(header["__metadata__"]["hardwire"])
    change(meta)
    header["__metadata__"]["hardwire"] = json.dumps(meta)
    return _join(header, body)


def _edit_header(data, change):
    header, body = _split(data)
    change(header)
    return _join(header, body)


def _edit_tensor(data, name, change):
    header, body = _split(data)
    begin, end = header[name]["data_offsets"]
    dtype = {"I8": "i1", "I16": "<i2", "U16": "<u2", "I64": "<i8", "F64": "<f8"}[
        header[name]["dtype"]]
    array = np.frombuffer(body[begin:end], dtype=dtype).copy()
    change(array)
    return _join(header, body[:begin] + array.tobytes() + body[end:])


def _set(key, value):
    def change(meta):
        meta[key] = value
    return change


def _set_at(index, value):
    def change(array):
        array[index] = value
    return change


CORRUPTIONS = {
    "truncated": (lambda d: d[:-100], "truncated"),
    "tiny file": (lambda d: d[:5], "header length"),
    "header too long": (lambda d: (10 ** 9).to_bytes(8, "little") + d[8:], "header length"),
    "bad json": (lambda d: d[:8] + b"{" * int.from_bytes(d[:8], "little") + d[8 + int.from_bytes(
        d[:8], "little"):], "header"),
    "no metadata": (lambda d: _edit_header(d, lambda h: h.pop("__metadata__")),
                    "__metadata__.hardwire"),
    "version": (lambda d: _edit_meta(d, _set("version", 99)), "version"),
    "format": (lambda d: _edit_meta(d, _set("format", "other")), "format"),
    "spec field": (lambda d: _edit_meta(d, lambda m: m["spec"].__setitem__("dim", -4)), "spec.dim"),
    "context": (lambda d: _edit_meta(d, _set("context", "big")), "context"),
    "norm shift": (lambda d: _edit_meta(d, lambda m: m["norms"]["norm"].__setitem__("shift", 40)),
                   "norms.norm.shift"),
    "layer constant": (lambda d: _edit_meta(d, lambda m: m["layers"][1].pop("s_att")),
                       r"layers\[1\].s_att"),
    "bits": (lambda d: _edit_meta(d, lambda m: m["linears"]["layers.0.wk"].__setitem__("bits", 3)),
             "linears.layers.0.wk.bits"),
    "scale": (lambda d: _edit_meta(d, lambda m: m["scales"].__setitem__("resid", -1.0)),
              "scales.resid"),
    "missing tensor": (lambda d: _edit_header(d, lambda h: h.pop("layers.1.w3.values")),
                       "layers.1.w3.values"),
    "extra tensor": (lambda d: _edit_header(d, lambda h: h.__setitem__(
        "bogus", {"dtype": "I8", "shape": [0], "data_offsets": [0, 0]})), "bogus"),
    "dtype": (lambda d: _edit_header(d, lambda h: h["layers.0.w1.M"].__setitem__("dtype", "F64")),
              "layers.0.w1.M"),
    "shape": (lambda d: _edit_header(d, lambda h: h["norm.gain"].__setitem__("shape", [4, 6])),
              "norm.gain"),
    "weight range": (lambda d: _edit_tensor(d, "layers.0.wv.values", _set_at(3, -128)),
                     "layers.0.wv.values"),
    "multiplier": (lambda d: _edit_tensor(d, "layers.1.wo.M", _set_at(0, 5)), "layers.1.wo.M"),
    "shift": (lambda d: _edit_tensor(d, "embed.shift", _set_at(2, 63)), "embed.shift"),
    "table": (lambda d: _edit_tensor(d, "exp2", _set_at(7, 1)), "exp2"),
    "rope": (lambda d: _edit_tensor(d, "rope.sin", _set_at(1, 20000)), "rope.sin"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_names_the_field(kind, tmp_path):
    qm = quantize(random_loaded(0))
    corrupt, field = CORRUPTIONS[kind]
    path = tmp_path / "bad.hwq"
    path.write_bytes(corrupt(native_bytes(qm)))
    with pytest.raises(ModelFormatError, match=rf"bad.hwq: .*({field})") as info:
        load_native(path)
    assert str(path) in str(info.value)


def test_int4_range_enforced(tmp_path):
    qm = quantize(random_loaded(0), weights="int4")
    data = _edit_tensor(native_bytes(qm), "layers.0.wq.values", _set_at(0, 9))
    (tmp_path / "m.hwq").write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"layers.0.wq.values: tensor value out of range "
                                               r"\(expected -7..7, found 9\)"):
        load_native(tmp_path / "m.hwq")


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read the file"):
        load_native(tmp_path / "none.hwq")
