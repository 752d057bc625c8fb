"""load_model's dispatch on what the path is, bundled names, the .hwq hook, tokenizer id checks."""

import shutil
import sys
import types

import pytest
from model_factory import tiny_hf_model, write_gguf

from hardwire.errors import HardwireError, ModelFormatError
from hardwire.gen import frontends
from hardwire.gen.frontends import bundled_dir, list_bundled, load_model
from hardwire.gen.tokenizer import PieceTokenizer


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return tiny_hf_model(tmp_path_factory.mktemp("hf"), seed=1)


def test_bundled_dir_is_the_repository_models_folder():
    assert bundled_dir().name == "models" and (bundled_dir().parent / "gen" / "model.py").is_file()
    on_disk = sorted(p.name for p in bundled_dir().glob("*") if (p / "config.json").is_file())
    assert list_bundled() == on_disk
    for name in list_bundled():
        assert load_model(name).format == "huggingface"


def test_bundled_name(tmp_path, monkeypatch, hf):
    shutil.copytree(hf[0], tmp_path / "tiny")
    (tmp_path / "junk").mkdir()
    monkeypatch.setattr(frontends, "bundled_dir", lambda: tmp_path)
    assert list_bundled() == ["tiny"]
    monkeypatch.chdir(tmp_path.parent)
    assert load_model("tiny").spec.vocab_size == 61
    with pytest.raises(ModelFormatError, match=r"kjv: no such file.*bundled: tiny"):
        load_model()


@pytest.mark.parametrize("make, field", [
    (lambda p: p / "absent.gguf", "no such file"),
    (lambda p: (p / "w.txt").write_text("hi") and p / "w.txt", "file type"),
    (lambda p: (p / "d").mkdir() or p / "d", "config.json"),
])
def test_not_a_model(tmp_path, make, field):
    path = make(tmp_path)
    with pytest.raises(ModelFormatError) as info:
        load_model(path)
    assert str(path) in str(info.value) and field in str(info.value)
    assert "a .gguf file" in str(info.value)


def test_config_json_and_suffixless_gguf(tmp_path, hf):
    assert load_model(hf[0] / "config.json").format == "huggingface"
    write_gguf(tmp_path / "model", hf[1])
    assert load_model(tmp_path / "model").format == "gguf"


def test_native_hook(tmp_path, monkeypatch):
    path = tmp_path / "m.hwq"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "hardwire.gen.native", None)   # import fails
    with pytest.raises(ModelFormatError, match="load_native") as info:
        load_model(path)
    assert str(path) in str(info.value)
    fake = types.ModuleType("hardwire.gen.native")
    fake.load_native = lambda p: ("native", p)
    monkeypatch.setitem(sys.modules, "hardwire.gen.native", fake)
    assert load_model(path) == ("native", path)


def test_decode_refuses_ids_outside_the_vocabulary(hf):
    hf_tok = load_model(hf[0]).tokenizer
    piece_tok = PieceTokenizer(["<unk>", "\u2581a", "b"], source="x.gguf")
    for tok in (hf_tok, piece_tok):
        for bad in ([tok.vocab_size], [-1], ["a"], [1.5]):
            with pytest.raises(HardwireError, match="token id"):
                tok.decode(bad)
    assert piece_tok.decode(piece_tok.encode("ab a")) == "ab a"


def test_byte_level_gguf_vocabulary():
    tok = PieceTokenizer(["<s>", "h", "ello", "\u0120world", "\u010a"], source="x.gguf",
                         model="gpt2", token_types=[3, 1, 1, 1, 1])
    assert tok.decode([0, 1, 2, 3, 4]) == "hello world\n"
    assert tok.encode("hello world\n") == [1, 2, 3, 4]
