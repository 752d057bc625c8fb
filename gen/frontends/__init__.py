"""Readers that turn a model file into a :class:`~hardwire.gen.model.LoadedModel`.

:func:`load_model` decides by what the path is: a Hugging Face directory (``config.json``), a
``.gguf`` file, a llama2.c ``.bin`` checkpoint, a native ``.hwq`` file, or the name of a model
bundled in the repository's ``models/`` folder.
"""

from pathlib import Path

from ...errors import ConfigError, ModelFormatError

__all__ = ["load_model", "list_bundled", "bundled_dir", "DEFAULT_BUNDLED"]

DEFAULT_BUNDLED = "kjv"
_PICKLE_STARTS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
EXPECTED = ("a Hugging Face directory with config.json, a .gguf file, a llama2.c .bin "
            "checkpoint, a .hwq file, or a bundled model name")


def bundled_dir():
    """The repository's ``models/`` folder (beside the ``gen`` folder)."""
    return Path(__file__).resolve().parent.parent.parent / "models"


def list_bundled():
    """Names of the bundled models (``models/<name>/config.json``), sorted."""
    root = bundled_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def load_model(path_or_name=DEFAULT_BUNDLED, *, tokenizer_path=None):
    """Load a model from a path or a bundled name and return a ``LoadedModel``.

    ``tokenizer_path`` names llama2.c's ``tokenizer.bin`` when it is not beside the checkpoint;
    other formats carry their own tokenizer. Raises :class:`ModelFormatError` when the path
    does not exist or is no known format.
    """
    text = str(path_or_name)
    path = Path(text)
    if not path.exists() and "/" not in text and "\\" not in text \
            and text in list_bundled():
        path = bundled_dir() / text
    if not path.exists():
        bundled = ", ".join(list_bundled()) or "none"
        raise ModelFormatError(text, "no such file, directory or bundled model",
                               expected=f"{EXPECTED} (bundled: {bundled})", found="nothing")
    if tokenizer_path is not None and not (path.is_file() and path.suffix == ".bin"):
        raise ConfigError(f"{tokenizer_path}: a separate tokenizer file applies to llama2.c "
                          f".bin checkpoints only, not to {path}")
    if path.is_dir():
        if (path / "config.json").is_file():
            from .huggingface import load_huggingface
            return load_huggingface(path)
        raise ModelFormatError(path, "directory holds no config.json", field="config.json",
                               expected=EXPECTED, found="a directory without config.json")
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the file: {e.strerror}") from None
    if suffix == ".gguf" or start == b"GGUF":
        from .gguf_reader import load_gguf
        return load_gguf(path)
    if suffix == ".hwq":
        # Dispatch hook for the native QuantizedModel file (gen/native.py, safetensors + JSON).
        try:
            from ..native import load_native
        except ImportError:
            raise ModelFormatError(path, "native .hwq files cannot be read yet: "
                                   "hardwire.gen.native.load_native is not available",
                                   field="format", expected="a hardwire build with gen/native.py",
                                   found=".hwq") from None
        return load_native(path)
    if suffix == ".bin":
        if start.startswith(_PICKLE_STARTS):
            raise ModelFormatError(path, "PyTorch pickle checkpoints are refused (loading them "
                                   "can run code); convert to safetensors or GGUF",
                                   field="format", expected="a llama2.c checkpoint",
                                   found="a PyTorch/pickle file")
        from .llama2c import load_llama2c
        return load_llama2c(path, tokenizer_path=tokenizer_path)
    if suffix == ".json" and path.name == "config.json":
        return load_model(path.parent)
    raise ModelFormatError(path, "unknown model format", field="file type",
                           expected=EXPECTED, found=f"suffix {path.suffix or '(none)'!r}")
