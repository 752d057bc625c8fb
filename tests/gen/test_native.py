import json

import numpy as np
import pytest
from quant_helpers import CharTokenizer, random_loaded
from safetensors.numpy import save

from hardwire.errors import ModelFormatError
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
    assert (tmp_path / "a.hwq").read_bytes() == _encode(*_flatten(qm))
    from safetensors.numpy import load_file
    tensors = load_file(tmp_path / "a.hwq")
    np.testing.assert_array_equal(tensors["layers.0.wq.values"], qm.layers[0].wq.values)
    assert tensors["rsqrt"].dtype == np.uint16
    assert is_native(tmp_path / "a.hwq")
    (tmp_path / "x.bin").write_bytes(b"\x00" * 16)
    assert not is_native(tmp_path / "x.bin")
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "a.hwq").read_bytes())
    assert is_native(tmp_path / "a.safetensors")
    (tmp_path / "b.safetensors").write_bytes(save(tensors))
    assert not is_native(tmp_path / "b.safetensors")


def test_hf_tokenizer_travels(tmp_path):
    from model_factory import char_tokenizer_json

    from hardwire.gen.tokenizer import HFTokenizer
    char_tokenizer_json(tmp_path / "tokenizer.json", 29)
    qm = quantize(random_loaded(0, tokenizer=HFTokenizer(tmp_path / "tokenizer.json")))
    save_native(qm, tmp_path / "m.hwq")
    back = load_native(tmp_path / "m.hwq")
    assert isinstance(back.tokenizer, StoredTokenizer) and back.tokenizer.hf_json is not None
    assert back.tokenizer.encode("tea") == qm.tokenizer.encode("tea")
    assert back.tokenizer.pieces == qm.tokenizer.pieces
    assert back.tokenizer.to_json() == qm.tokenizer.to_json()
    assert json.loads(qm.tokenizer.to_json())["model"]["vocab"]


# --- corruption: every class names the file and the field -------------------------------------

def _encode(meta, tensors):
    """A native file's bytes from its metadata and tensors, written by the library alone."""
    return save(tensors, metadata={"hardwire": json.dumps(meta, sort_keys=True,
                                                          separators=(",", ":"))})


def _meta(change):
    def corrupt(meta, tensors):
        change(meta)
        return _encode(meta, tensors)
    return corrupt


def _tensors(change):
    def corrupt(meta, tensors):
        change(tensors)
        return _encode(meta, tensors)
    return corrupt


def _raw(change):
    return lambda meta, tensors: change(_encode(meta, tensors))


def _set(key, value):
    def change(meta):
        meta[key] = value
    return change


def _set_at(name, index, value):
    def change(tensors):
        tensors[name] = tensors[name].copy()
        tensors[name].flat[index] = value
    return change


def _header_length(data):
    return int.from_bytes(data[:8], "little")


CORRUPTIONS = {
    "truncated": (_raw(lambda d: d[:-100]), "not fully covered"),
    "tiny file": (_raw(lambda d: d[:5]), "header too small"),
    "header too long": (_raw(lambda d: (10 ** 9).to_bytes(8, "little") + d[8:]),
                        "header too large"),
    "bad json": (_raw(lambda d: d[:8] + b"{" * _header_length(d) + d[8 + _header_length(d):]),
                 "header"),
    "no metadata": (lambda meta, tensors: save(tensors), "__metadata__.hardwire"),
    "version": (_meta(_set("version", 99)), "version"),
    "format": (_meta(_set("format", "other")), "format"),
    "spec field": (_meta(lambda m: m["spec"].__setitem__("dim", -4)), "spec.dim"),
    "context": (_meta(_set("context", "big")), "context"),
    "norm shift": (_meta(lambda m: m["norms"]["norm"].__setitem__("shift", 40)),
                   "norms.norm.shift"),
    "layer constant": (_meta(lambda m: m["layers"][1].pop("s_att")), r"layers\[1\].s_att"),
    "bits": (_meta(lambda m: m["linears"]["layers.0.wk"].__setitem__("bits", 3)),
             "linears.layers.0.wk.bits"),
    "scale": (_meta(lambda m: m["scales"].__setitem__("resid", -1.0)), "scales.resid"),
    "missing tensor": (_tensors(lambda t: t.pop("layers.1.w3.values")), "layers.1.w3.values"),
    "extra tensor": (_tensors(lambda t: t.__setitem__("bogus", np.zeros(0, np.int8))), "bogus"),
    "dtype": (_tensors(lambda t: t.__setitem__("layers.0.w1.M", t["layers.0.w1.M"].view("<f8"))),
              "layers.0.w1.M"),
    "shape": (_tensors(lambda t: t.__setitem__("norm.gain", t["norm.gain"].reshape(2, -1))),
              "norm.gain"),
    "weight range": (_tensors(_set_at("layers.0.wv.values", 3, -128)), "layers.0.wv.values"),
    "multiplier": (_tensors(_set_at("layers.1.wo.M", 0, 5)), "layers.1.wo.M"),
    "shift": (_tensors(_set_at("embed.shift", 2, 63)), "embed.shift"),
    "table": (_tensors(_set_at("exp2", 7, 1)), "exp2"),
    "rope": (_tensors(_set_at("rope.sin", 1, 20000)), "rope.sin"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_names_the_field(kind, tmp_path):
    qm = quantize(random_loaded(0))
    corrupt, field = CORRUPTIONS[kind]
    path = tmp_path / "bad.hwq"
    meta, tensors = _flatten(qm)
    path.write_bytes(corrupt(json.loads(json.dumps(meta)), tensors))
    with pytest.raises(ModelFormatError, match=rf"bad.hwq: .*({field})") as info:
        load_native(path)
    assert str(path) in str(info.value)


def test_int4_range_enforced(tmp_path):
    qm = quantize(random_loaded(0), weights="int4")
    data = _tensors(_set_at("layers.0.wq.values", 0, 9))(*_flatten(qm))
    (tmp_path / "m.hwq").write_bytes(data)
    with pytest.raises(ModelFormatError, match=r"layers.0.wq.values: tensor value out of range "
                                               r"\(expected -7..7, found 9\)"):
        load_native(tmp_path / "m.hwq")


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read the file"):
        load_native(tmp_path / "none.hwq")
