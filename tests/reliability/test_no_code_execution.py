"""Loading never executes code from a file: pickles (plain or in a PyTorch zip) and remote-code
hooks placed where a model is expected are refused or ignored, and nothing runs."""

import io
import json
import pickle
import shutil
import zipfile

import pytest
from broken_models import seed_models

from hardwire.cli import main
from hardwire.errors import HardwireError
from hardwire.gen.frontends import load_model


class _Trap:
    """Unpickling this opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickles(marker):
    """``{name: bytes}``: the trap as pickle protocols 0, 2 and 5 and inside a PyTorch-style zip."""
    out = {f"protocol{p}": pickle.dumps({"w": _Trap(marker)}, protocol=p) for p in (0, 2, 5)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", out["protocol2"])
        z.writestr("archive/version", "3\n")
    out["torch-zip"] = buffer.getvalue()
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_models(tmp_path_factory.mktemp("seeds"))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any unpickling during the test fails it, benign or not."""
    def refuse(*args, **kwargs):
        raise AssertionError("a loader unpickled something")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)


def _placements(seeds, where, blob):
    """Paths to load, each with ``blob`` where a model file is expected."""
    hf_bin = where / "hf-bin"
    shutil.copytree(seeds["huggingface"], hf_bin)
    (hf_bin / "model.safetensors").unlink()
    (hf_bin / "pytorch_model.bin").write_bytes(blob)
    out = [hf_bin]
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        d = where / f"hf-{name}"
        shutil.copytree(seeds["huggingface"], d)
        (d / name).write_bytes(blob)
        out.append(d)
    for name in ("model.bin", "model.pkl", "model.pt", "model.pth", "model.hwq", "model.gguf",
                 "model.safetensors", "model"):
        (where / name).write_bytes(blob)
        out.append(where / name)
    l2c = where / "l2c"
    shutil.copytree(seeds["llama2c"].parent, l2c)
    (l2c / "tokenizer.bin").write_bytes(blob)
    out.append(l2c / "model.bin")
    return out


def test_pickles_are_refused_without_running(seeds, tmp_path, capsys, no_unpickling):
    marker = tmp_path / "marker"
    count = 0
    for kind, blob in _pickles(marker).items():
        where = tmp_path / kind
        where.mkdir()
        for path in _placements(seeds, where, blob):
            with pytest.raises(HardwireError) as info:
                load_model(path)
            named = path if path.name != "model.bin" else path.parent   # or its tokenizer.bin
            assert str(named) in str(info.value), (kind, path, info.value)
            assert main(["inspect", str(path)]) == 2, (kind, path)
            assert "error:" in capsys.readouterr().err
            count += 1
    assert not marker.exists()
    assert count == 4 * 13


def test_pytorch_checkpoint_is_named_as_refused(seeds, tmp_path, no_unpickling):
    blob = _pickles(tmp_path / "marker")["torch-zip"]
    where = tmp_path / "w"
    where.mkdir()
    hf_bin, *_ = _placements(seeds, where, blob)
    for path in (hf_bin, where / "model.bin"):
        with pytest.raises(HardwireError, match="pickle checkpoints are refused"):
            load_model(path)
    assert not (tmp_path / "marker").exists()


def test_remote_code_hooks_are_never_imported(seeds, tmp_path, no_unpickling):
    """A config asking for custom modeling code (``auto_map``) loads as plain Llama weights; the
    Python files beside it are never imported."""
    marker = tmp_path / "marker"
    d = tmp_path / "remote"
    shutil.copytree(seeds["huggingface"], d)
    config = json.loads((d / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_trap.Trap",
                          "AutoTokenizer": ["tokenization_trap.Trap", None]}
    (d / "config.json").write_text(json.dumps(config))
    for module in ("modeling_trap.py", "tokenization_trap.py", "__init__.py"):
        (d / module).write_text(f"open({str(marker)!r}, 'w')\nclass Trap: pass\n")
    assert load_model(d).format == "huggingface"
    assert main(["inspect", str(d)]) == 0
    assert not marker.exists()
