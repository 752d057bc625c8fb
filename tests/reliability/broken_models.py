"""A corpus of broken model files for every front end, and a guard that runs one load.

:func:`seed_models` writes one tiny valid model per front end (Hugging Face directory, GGUF,
llama2.c ``.bin`` + ``tokenizer.bin``, native ``.hwq``); :func:`corpus` lists the
:class:`Case` s, each a function that damages a copy of a seed in a given way (truncation at
many offsets, byte flips, wrong dtypes, mismatched shapes, missing tensors, NaN/Inf, absurd
dimensions, unsupported quantization types, huge declared sizes, pickles). :func:`guarded`
runs a load under a time limit, an address-space limit and a traced-memory peak, so that a hang
or a memory blow-up shows as a failure instead of taking the machine down.
"""

import contextlib
import json
import math
import resource
import shutil
import signal
import struct
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from model_factory import CHARS, char_tokenizer_json, spm_vocab, write_gguf, write_llama2c
from model_factory import write_llama2c_tokenizer as write_l2c_tokenizer
from quant_helpers import CharTokenizer, random_loaded

__all__ = ["SPEC", "FRONT_ENDS", "FUZZ_TARGETS", "FUZZ_EXAMPLES_PER_TARGET", "Case",
           "seed_models", "corpus", "fresh_copy", "guarded", "Outcome", "Hang",
           "read_safetensors_raw", "write_safetensors_raw", "write_hf"]

# Every matrix has 32 inputs, so GGUF stores all of them as Q8_0 blocks.
SPEC = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=32, vocab_size=40,
            max_seq_len=16)
FRONT_ENDS = ("huggingface", "gguf", "llama2c", "native", "safetensors")
TIME_LIMIT_S = 10.0            # one load of a ~100 kB file takes milliseconds
TRACED_PEAK_LIMIT = 64 << 20   # Python/numpy allocations during one load
ADDRESS_HEADROOM = 1 << 30     # address space a load may add before allocations fail
FUZZ_EXAMPLES_PER_TARGET = 60
# (front end, file edited inside the seed's folder) for test_fuzz_readers
FUZZ_TARGETS = (("huggingface", "model.safetensors"), ("huggingface", "config.json"),
                ("huggingface", "tokenizer.json"), ("gguf", "model.gguf"),
                ("llama2c", "model.bin"), ("llama2c", "tokenizer.bin"), ("native", "model.hwq"))


class Hang(Exception):
    """A guarded call ran past its time limit."""


@dataclass
class Outcome:
    """What one guarded call did: its result or exception, seconds taken, traced peak bytes."""
    result: object = None
    error: BaseException | None = None
    seconds: float = 0.0
    peak: int = 0


def _address_space():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


@contextlib.contextmanager
def _address_limit(headroom):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def guarded(fn, *args, seconds=TIME_LIMIT_S, headroom=ADDRESS_HEADROOM, **kwargs):
    """Run ``fn(*args, **kwargs)`` with a wall-clock alarm (:class:`Hang`), an address-space
    limit ``headroom`` bytes above the current size (a huge allocation fails instead of
    swapping) and tracemalloc on; return an :class:`Outcome`. Main thread only (SIGALRM)."""
    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    outcome = Outcome()
    begin = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with _address_limit(headroom):
            outcome.result = fn(*args, **kwargs)
    except BaseException as e:   # the caller judges every outcome
        if isinstance(e, KeyboardInterrupt):
            raise
        outcome.error = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        outcome.seconds = time.perf_counter() - begin
        outcome.peak = tracemalloc.get_traced_memory()[1]
        if not started:
            tracemalloc.stop()
    return outcome


# ---------------------------------------------------------------- safetensors at the byte level

def read_safetensors_raw(path):
    """``(header dict, data bytes)`` of a safetensors file, without checking anything."""
    blob = Path(path).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_safetensors_raw(path, header, data):
    """Write ``header`` (JSON, padded with spaces to 8 bytes as the library does) and ``data``."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + data)


def _edit_tensor(path, name, fn):
    """Replace tensor ``name``'s bytes by ``fn(bytes) -> bytes`` (offsets shifted to fit)."""
    header, data = read_safetensors_raw(path)
    begin, end = header[name]["data_offsets"]
    new = fn(data[begin:end])
    delta = len(new) - (end - begin)
    for key, info in header.items():
        if key != "__metadata__" and info["data_offsets"][0] >= end:
            info["data_offsets"] = [info["data_offsets"][0] + delta,
                                    info["data_offsets"][1] + delta]
    header[name]["data_offsets"] = [begin, begin + len(new)]
    write_safetensors_raw(path, header, data[:begin] + new + data[end:])


def _edit_header(path, fn):
    header, data = read_safetensors_raw(path)
    fn(header)
    write_safetensors_raw(path, header, data)


def _drop_tensor(path, name):
    _edit_tensor(path, name, lambda b: b"")
    _edit_header(path, lambda h: h.pop(name))


def _f32_with(value, index=3):
    def fn(raw):
        a = np.frombuffer(raw, dtype="<f4").copy()
        a.reshape(-1)[index] = value
        return a.tobytes()
    return fn


# ---------------------------------------------------------------- the seeds

def _hf_config(spec, tied=False):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": spec.dim, "intermediate_size": spec.ffn_dim,
            "num_hidden_layers": spec.n_layers, "num_attention_heads": spec.n_heads,
            "num_key_value_heads": spec.n_kv_heads, "head_dim": spec.head_dim,
            "vocab_size": spec.vocab_size, "max_position_embeddings": spec.max_seq_len,
            "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "default",
                                                      "rope_theta": 10000.0},
            "tie_word_embeddings": tied, "hidden_act": "silu", "bos_token_id": 1,
            "eos_token_id": 2}


def write_hf(directory, loaded):
    from safetensors.numpy import save_file

    from hardwire.gen.frontends.huggingface import hf_tensor_name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(_hf_config(loaded.spec), indent=1))
    save_file({hf_tensor_name(n): w for n, w in loaded.weights.items()},
              str(directory / "model.safetensors"))
    char_tokenizer_json(directory / "tokenizer.json", loaded.spec.vocab_size)


def seed_models(root):
    """Write one valid tiny model per front end under ``root``; return ``{front end: path}``
    (the path :func:`~hardwire.gen.frontends.load_model` takes)."""
    from hardwire.gen.native import save_native
    from hardwire.gen.quantize import quantize
    root = Path(root)
    loaded = random_loaded(5, **SPEC)
    write_hf(root / "hf", loaded)
    tokens, types = spm_vocab(SPEC["vocab_size"])
    (root / "gguf").mkdir()
    write_gguf(root / "gguf" / "model.gguf", loaded, qtype="Q8_0", tokens=tokens,
               token_types=types)
    (root / "l2c").mkdir()
    write_llama2c(root / "l2c" / "model.bin", loaded)
    write_l2c_tokenizer(root / "l2c" / "tokenizer.bin",
                        [t.replace("\u2581", " ") for t in tokens],
                        [float(-i) for i in range(len(tokens))])
    (root / "hwq").mkdir()
    with_pieces = random_loaded(5, tokenizer=CharTokenizer(CHARS[:SPEC["vocab_size"]]), **SPEC)
    save_native(quantize(with_pieces, weights="int8", calibration=[[1, 5, 9, 3, 7]]),
                root / "hwq" / "model.hwq")
    (root / "st").mkdir()
    shutil.copy(root / "hf" / "model.safetensors", root / "st" / "model.safetensors")
    return {"huggingface": root / "hf", "gguf": root / "gguf" / "model.gguf",
            "llama2c": root / "l2c" / "model.bin", "native": root / "hwq" / "model.hwq",
            "safetensors": root / "st" / "model.safetensors"}


# ---------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    """One broken input: ``damage(path)`` edits a fresh copy of the ``front_end`` seed at
    ``path`` (a directory for Hugging Face, else the file). ``always_error``: the damage must be
    refused (truncations, targeted edits); otherwise a valid model is an acceptable outcome
    (a flipped byte inside a weight). ``needle``: text the error message must hold (the tensor
    or field that is wrong), besides the path."""
    front_end: str
    kind: str
    name: str
    damage: object
    always_error: bool = True
    needle: str | None = None
    target: str | None = field(default=None, compare=False)

    @property
    def id(self):
        return f"{self.front_end}-{self.kind}-{self.name}"


def _truncate_to(n, target=None):
    def damage(path):
        p = path / target if target else path
        p.write_bytes(p.read_bytes()[:n])
    return damage


def _flip(offsets, target=None):
    def damage(path):
        p = path / target if target else path
        blob = bytearray(p.read_bytes())
        for o in offsets:
            blob[o % len(blob)] ^= 0xFF
        p.write_bytes(bytes(blob))
    return damage


def _cut_points(size, n=24):
    """Truncation offsets: the first bytes one by one (headers), then ``n`` spread evenly."""
    small = [0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 20, 23, 24, 25, 31, 32, 40, 48, 64, 100]
    spread = [size * k // (n + 1) for k in range(1, n + 1)]
    return sorted({o for o in small + spread + [size - 1] if 0 <= o < size})


def _byte_cases(front_end, size, target=None, *, needed=None):
    """Truncations and byte flips of a file of ``size`` bytes; cutting at or after ``needed``
    (GGUF: the end of the last tensor, before alignment padding) may leave a valid file."""
    needed = size if needed is None else needed
    tag = f"{target}@" if target else ""
    out = [Case(front_end, "truncated", f"{tag}{n}", _truncate_to(n, target),
                always_error=n < needed, target=target) for n in _cut_points(size)]
    # Byte flips: many land in weights and leave a valid model, so either outcome is fine.
    positions = [0, 3, 4, 8, 11, 16, 20, 24, 40, 64, 96, 128, 200, 300, 500, 1000,
                 size // 3, size // 2, size - 8, size - 1]
    out += [Case(front_end, "flipped", f"{tag}{o}", _flip([o], target), always_error=False,
                 target=target) for o in sorted(set(positions))]
    return out


def _hf_config_edit(**changes):
    def damage(path):
        config = json.loads((path / "config.json").read_text())
        for key, value in changes.items():
            if value is _DELETE:
                config.pop(key, None)
            else:
                config[key] = value
        (path / "config.json").write_text(json.dumps(config))
    return damage


_DELETE = object()
_HF_WQ = "model.layers.0.self_attn.q_proj.weight"
_HF_NORM = "model.layers.0.input_layernorm.weight"


def _st(fn, *args, file="model.safetensors"):
    def damage(path):
        fn(path / file if path.is_dir() else path, *args)
    return damage


def _st_dtype(name, dtype, itemsize):
    def edit(path):
        header, _ = read_safetensors_raw(path)
        n = math.prod(header[name]["shape"])
        _edit_tensor(path, name, lambda raw: bytes(n * itemsize))
        _edit_header(path, lambda h: h[name].update(dtype=dtype))
    return edit


def _st_shape(name, shape):
    def edit(path):
        _edit_header(path, lambda h: h[name].update(shape=list(shape)))
    return edit


def _st_header_length(n):
    def damage(path):
        p = path / "model.safetensors" if path.is_dir() else path
        blob = p.read_bytes()
        p.write_bytes(n.to_bytes(8, "little") + blob[8:])
    return damage


def _safetensors_cases(front_end, wq, norm):
    """Structural damage shared by the Hugging Face weights and a bare/native safetensors."""
    return [
        Case(front_end, "wrong-dtype", "I32", _st(_st_dtype(wq, "I32", 4)), needle=wq),
        Case(front_end, "wrong-dtype", "F64", _st(_st_dtype(wq, "F64", 8)), needle=wq),
        Case(front_end, "wrong-dtype", "U8-unknown", _st(_st_header_edit(wq, dtype="Q4"))),
        Case(front_end, "mismatched-shape", "transposed", _st(_st_shape(wq, (32, 16)))
             if front_end == "native" else _st(_st_shape(wq, (16, 64)))),
        Case(front_end, "mismatched-shape", "bytes-vs-shape", _st(_st_shape(wq, (2, 2)))),
        Case(front_end, "mismatched-shape", "vector-as-matrix", _st(_st_shape(norm, (4, 8)))),
        Case(front_end, "missing-tensor", norm.rsplit(".", 1)[0], _st(_drop_tensor, norm),
             needle=norm),
        Case(front_end, "huge-size", "header-length-2^62", _st_header_length(1 << 62)),
        Case(front_end, "huge-size", "header-length-2^32", _st_header_length(1 << 32)),
        Case(front_end, "huge-size", "offsets-2^60",
             _st(_st_header_edit(wq, data_offsets=[0, 1 << 60]))),
        Case(front_end, "huge-size", "shape-10^9", _st(_st_shape(wq, (10**9, 10**9)))),
        Case(front_end, "flipped", "header-json", _st(_st_raw_replace(b'"shape"', b'"shapf"'))),
        Case(front_end, "flipped", "header-not-utf8", _st(_st_raw_replace(b'"dtype"', b'"\xff\xfe'
                                                                            b'ype"'))),
    ]


def _st_header_edit(name, **changes):
    def edit(path):
        _edit_header(path, lambda h: h[name].update(changes))
    return edit


def _st_raw_replace(old, new):
    def edit(path):
        blob = path.read_bytes()
        path.write_bytes(blob.replace(old, new, 1))
    return edit


def _hf_cases(sizes):
    wq, norm = _HF_WQ, _HF_NORM
    nan = float("nan")
    cases = []
    for target in ("model.safetensors", "config.json", "tokenizer.json"):
        cases += _byte_cases("huggingface", sizes[target], target)
    cases += _safetensors_cases("huggingface", wq, norm)
    cases += [
        Case("huggingface", "nan-inf", "nan", _st(_edit_tensor, wq, _f32_with(nan)), needle=wq),
        Case("huggingface", "nan-inf", "inf", _st(_edit_tensor, norm, _f32_with(float("inf"))),
             needle=norm),
        Case("huggingface", "nan-inf", "-inf-embed",
             _st(_edit_tensor, "model.embed_tokens.weight", _f32_with(-float("inf"), 77)),
             needle="model.embed_tokens.weight"),
        Case("huggingface", "missing-tensor", "lm_head",
             _st(_drop_tensor, "lm_head.weight"), needle="lm_head.weight"),
        Case("huggingface", "missing-tensor", "tokenizer-json-deleted",
             lambda p: (p / "tokenizer.json").unlink(), always_error=False),
        Case("huggingface", "missing-tensor", "weights-deleted",
             lambda p: (p / "model.safetensors").unlink(), needle="no weights"),
        Case("huggingface", "missing-tensor", "config-deleted",
             lambda p: (p / "config.json").unlink(), needle="config.json"),
        Case("huggingface", "mismatched-shape", "extra-layer",
             _hf_config_edit(num_hidden_layers=2), needle="model.layers.1"),
        Case("huggingface", "mismatched-shape", "hidden-size",
             _hf_config_edit(hidden_size=64), needle="shape"),
        Case("huggingface", "mismatched-shape", "vocab", _hf_config_edit(vocab_size=41),
             needle="model.embed_tokens.weight"),
        Case("huggingface", "mismatched-shape", "heads-not-dividing",
             _hf_config_edit(num_key_value_heads=3), needle="num_key_value_heads"),
        Case("huggingface", "mismatched-shape", "odd-head-dim", _hf_config_edit(head_dim=15),
             needle="head_dim"),
        Case("huggingface", "mismatched-shape", "tokenizer-larger",
             _hf_config_edit(vocab_size=30), needle="tokenizer"),
        Case("huggingface", "wrong-dtype", "config-string-dim",
             _hf_config_edit(hidden_size="32"), needle="hidden_size"),
        Case("huggingface", "wrong-dtype", "config-float-dim",
             _hf_config_edit(hidden_size=32.0), needle="hidden_size"),
        Case("huggingface", "wrong-dtype", "config-list", lambda p: (p / "config.json")
             .write_text("[1, 2]"), needle="JSON object"),
        Case("huggingface", "wrong-dtype", "rope-theta-nan",
             lambda p: (p / "config.json").write_text((p / "config.json").read_text()
                                                       .replace("10000.0", "NaN")),
             needle="rope_theta"),
        Case("huggingface", "wrong-dtype", "tied-string",
             _hf_config_edit(tie_word_embeddings="false"), needle="tie_word_embeddings"),
        Case("huggingface", "wrong-dtype", "bias-string", _hf_config_edit(mlp_bias="false"),
             needle="mlp_bias"),
        Case("huggingface", "wrong-dtype", "architectures-string",
             _hf_config_edit(architectures="LlamaForCausalLM"), needle="architectures"),
        Case("huggingface", "wrong-dtype", "rope-parameters-list",
             _hf_config_edit(rope_parameters=[1]), needle="rope_parameters"),
        Case("huggingface", "wrong-dtype", "eos-string", _hf_config_edit(eos_token_id="2"),
             needle="eos_token_id"),
        Case("huggingface", "absurd-dims", "eos-outside", _hf_config_edit(eos_token_id=4000),
             needle="eos_token_id"),
        Case("huggingface", "absurd-dims", "negative-dim", _hf_config_edit(hidden_size=-32),
             needle="hidden_size"),
    ]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size", "max_position_embeddings", "head_dim"):
        for value in (10**9, 1 << 24, 1 << 62):
            # A context of 2^24 is a valid model (the compiler bounds the context it builds).
            valid = key == "max_position_embeddings" and value == 1 << 24
            cases.append(Case("huggingface", "absurd-dims", f"{key}={value}",
                              _hf_config_edit(**{key: value}), always_error=not valid))
    cases += [
        Case("huggingface", "absurd-dims", "num_hidden_layers=2^20",
             _hf_config_edit(num_hidden_layers=1 << 20), needle="model.layers.1"),
        Case("huggingface", "unsupported-quant", "quantization_config",
             _hf_config_edit(quantization_config={"quant_method": "gptq", "bits": 4}),
             needle="quantization_config"),
        Case("huggingface", "unsupported-quant", "int8-weights",
             _st(_st_dtype(wq, "I8", 1)), needle=wq),
        Case("huggingface", "unsupported-quant", "architecture",
             _hf_config_edit(architectures=["MistralForCausalLM"], model_type="mistral"),
             needle="architecture"),
        Case("huggingface", "unsupported-quant", "rope-scaling",
             _hf_config_edit(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}),
             needle="rope"),
        Case("huggingface", "huge-size", "shard-index-only",
             _hf_shard_index({"weight_map": {_HF_WQ: "../../etc/passwd"}}), needle="shard"),
        Case("huggingface", "huge-size", "shard-index-missing-file",
             _hf_shard_index({"weight_map": {_HF_WQ: "absent.safetensors"}}),
             needle="shard file missing"),
        Case("huggingface", "huge-size", "shard-index-not-json", _hf_shard_index("{"),
             needle="weight_map"),
        Case("huggingface", "flipped", "tokenizer-not-json",
             lambda p: (p / "tokenizer.json").write_text("{\"model\": 5}"),
             needle="tokenizer"),
    ]
    return cases


def _hf_shard_index(content):
    def damage(path):
        (path / "model.safetensors").unlink()
        text = content if isinstance(content, str) else json.dumps(content)
        (path / "model.safetensors.index.json").write_text(text)
    return damage


# -- GGUF

def _gguf_rewrite(**kwargs):
    def damage(path):
        tokens, types = spm_vocab(SPEC["vocab_size"])
        args = {"qtype": "Q8_0", "tokens": tokens, "token_types": types, **kwargs}
        write_gguf(path, random_loaded(5, **SPEC), **args)
    return damage


def _gguf_patch_u64(offset, value):
    def damage(path):
        blob = bytearray(path.read_bytes())
        blob[offset:offset + 8] = struct.pack("<Q", value)
        path.write_bytes(bytes(blob))
    return damage


def _gguf_patch_after(needle, skip, fmt, value):
    """Overwrite the ``fmt`` value ``skip`` bytes after the first ``needle`` in the file."""
    def damage(path):
        blob = bytearray(path.read_bytes())
        at = blob.index(needle) + len(needle) + skip
        blob[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
        path.write_bytes(bytes(blob))
    return damage


def _gguf_cases(path):
    import gguf
    wq = "blk.0.attn_q.weight"
    reader = gguf.GGUFReader(path)
    needed = max(t.data_offset + t.n_bytes for t in reader.tensors)
    nan_q8 = np.zeros((32, 34), dtype=np.uint8)
    nan_q8[:, :2] = np.frombuffer(np.float16(np.nan).tobytes(), dtype=np.uint8)
    inf_f32 = np.ones(32, dtype=np.float32)
    inf_f32[7] = np.inf
    cases = _byte_cases("gguf", path.stat().st_size, needed=needed)
    cases += [
        Case("gguf", "wrong-dtype", "I32-tensor",
             _gguf_rewrite(raw={wq: ("I32", np.zeros((32, 32), dtype=np.int32))}), needle=wq),
        Case("gguf", "wrong-dtype", "F64-tensor",
             _gguf_rewrite(raw={wq: ("F64", np.zeros((32, 32), dtype=np.float64))}), needle=wq),
        Case("gguf", "wrong-dtype", "type-id-999",
             _gguf_patch_after(wq.encode(), 4 + 2 * 8, "<I", 999), needle=wq),
        Case("gguf", "wrong-dtype", "metadata-string-dim",
             _gguf_rewrite(metadata={"llama.embedding_length": "32"}),
             needle="llama.embedding_length"),
        Case("gguf", "wrong-dtype", "tokens-not-strings",
             _gguf_rewrite(metadata={"tokenizer.ggml.tokens": ("array", list(range(40)))}),
             needle="tokenizer.ggml.tokens"),
        Case("gguf", "wrong-dtype", "token-type-scalar",
             _gguf_rewrite(metadata={"tokenizer.ggml.token_type": ("uint32", 5)}),
             needle="tokenizer.ggml.token_type"),
        Case("gguf", "wrong-dtype", "token-type-strings",
             _gguf_rewrite(metadata={"tokenizer.ggml.token_type": ("array", ["1"] * 40)}),
             needle="tokenizer.ggml.token_type"),
        Case("gguf", "wrong-dtype", "tokens-scalar",
             _gguf_rewrite(metadata={"tokenizer.ggml.tokens": ("string", "abc")}),
             needle="tokenizer.ggml.tokens"),
        Case("gguf", "wrong-dtype", "tokenizer-model-int",
             _gguf_rewrite(metadata={"tokenizer.ggml.model": ("uint32", 3)}),
             needle="tokenizer.ggml.model"),
        Case("gguf", "wrong-dtype", "bos-string",
             _gguf_rewrite(metadata={"tokenizer.ggml.bos_token_id": ("string", "x")}),
             needle="tokenizer.ggml.bos_token_id"),
        Case("gguf", "wrong-dtype", "dim-bool",
             _gguf_rewrite(metadata={"llama.embedding_length": ("bool", True)}),
             needle="llama.embedding_length"),
        Case("gguf", "absurd-dims", "eps-zero",
             _gguf_rewrite(metadata={"llama.attention.layer_norm_rms_epsilon": ("float32", 0.0)}),
             needle="llama.attention.layer_norm_rms_epsilon"),
        Case("gguf", "mismatched-shape", "vocab-metadata",
             _gguf_rewrite(metadata={"llama.vocab_size": 41}), needle="token_embd.weight"),
        Case("gguf", "mismatched-shape", "dim-metadata",
             _gguf_rewrite(metadata={"llama.embedding_length": 64}), needle="llama."),
        Case("gguf", "mismatched-shape", "tensor-dims-swapped",
             _gguf_patch_after(b"blk.0.ffn_norm.weight", 4, "<Q", 16), needle="ffn_norm"),
        Case("gguf", "mismatched-shape", "too-many-tokens",
             _gguf_rewrite(tokens=[f"t{i}" for i in range(41)], token_types=None,
                           metadata={"llama.vocab_size": 40}),
             needle="tokenizer.ggml.tokens"),
        Case("gguf", "mismatched-shape", "kv-heads",
             _gguf_rewrite(metadata={"llama.attention.head_count_kv": 3}),
             needle="head_count_kv"),
        Case("gguf", "missing-tensor", "attn_q", _gguf_rewrite(drop=(wq,)), needle=wq),
        Case("gguf", "missing-tensor", "output_norm",
             _gguf_rewrite(drop=("output_norm.weight",)), needle="output_norm.weight"),
        Case("gguf", "missing-tensor", "metadata-block-count",
             _gguf_rewrite(metadata={"llama.block_count": None}), needle="llama.block_count"),
        Case("gguf", "missing-tensor", "extra-bias",
             _gguf_rewrite(extra_tensors={"blk.0.attn_q.bias": np.zeros(32)}),
             needle="blk.0.attn_q.bias"),
        Case("gguf", "nan-inf", "nan-block-scale",
             _gguf_rewrite(raw={wq: ("Q8_0", nan_q8)}), needle=wq),
        Case("gguf", "nan-inf", "inf-f32-norm",
             _gguf_rewrite(raw={"blk.0.attn_norm.weight": ("F32", inf_f32)}),
             needle="blk.0.attn_norm.weight"),
        Case("gguf", "nan-inf", "nan-rope-theta",
             _gguf_rewrite(metadata={"llama.rope.freq_base": float("nan")}),
             needle="llama.rope.freq_base"),
        Case("gguf", "unsupported-quant", "IQ2_XXS-type-id",
             _gguf_patch_after(wq.encode(), 4 + 2 * 8, "<I",
                               int(gguf.GGMLQuantizationType.IQ2_XXS)), needle=wq),
        Case("gguf", "unsupported-quant", "architecture",
             _gguf_rewrite(metadata={"general.architecture": ("string", "mistral")}),
             needle="general.architecture"),
        Case("gguf", "unsupported-quant", "tokenizer-model",
             _gguf_rewrite(metadata={"tokenizer.ggml.model": "bert"}),
             needle="tokenizer.ggml.model"),
        Case("gguf", "huge-size", "tensor-count-2^40", _gguf_patch_u64(8, 1 << 40),
             needle="tensor_count"),
        Case("gguf", "huge-size", "tensor-count-2^64-1", _gguf_patch_u64(8, (1 << 64) - 1),
             needle="tensor_count"),
        Case("gguf", "huge-size", "kv-count-2^40", _gguf_patch_u64(16, 1 << 40),
             needle="kv_count"),
        Case("gguf", "huge-size", "key-length-2^62", _gguf_patch_u64(24, 1 << 62)),
        Case("gguf", "huge-size", "string-length-2^62",
             _gguf_patch_after(b"general.architecture", 4, "<Q", 1 << 62)),
        Case("gguf", "huge-size", "array-length-2^40",
             _gguf_patch_after(b"tokenizer.ggml.tokens", 4 + 4, "<Q", 1 << 40)),
        Case("gguf", "huge-size", "tensor-dim-10^9",
             _gguf_patch_after(wq.encode(), 4, "<Q", 10**9), needle=wq),
        Case("gguf", "huge-size", "tensor-n-dims-2^31",
             _gguf_patch_after(wq.encode(), 0, "<I", 1 << 31)),
        Case("gguf", "huge-size", "tensor-offset-2^60",
             _gguf_patch_after(wq.encode(), 4 + 2 * 8 + 4, "<Q", 1 << 60), needle=wq),
        Case("gguf", "absurd-dims", "version-7", _gguf_patch_after(b"GGUF", 0, "<I", 7),
             needle="version"),
    ]
    for key in ("llama.embedding_length", "llama.block_count", "llama.context_length",
                "llama.feed_forward_length", "llama.attention.head_count"):
        for value in (10**9, 1 << 24):
            valid = key == "llama.context_length" and value == 1 << 24
            cases.append(Case("gguf", "absurd-dims", f"{key}={value}",
                              _gguf_rewrite(metadata={key: ("uint64", value)}),
                              always_error=not valid))
    return cases


# -- llama2.c

def _l2c_header(**fields):
    order = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")

    def damage(path):
        blob = bytearray(path.read_bytes())
        for key, value in fields.items():
            i = order.index(key)
            blob[4 * i:4 * i + 4] = struct.pack("<i", value)
        path.write_bytes(bytes(blob))
    return damage


def _l2c_value(index, value):
    def damage(path):
        blob = bytearray(path.read_bytes())
        blob[28 + 4 * index:32 + 4 * index] = struct.pack("<f", value)
        path.write_bytes(bytes(blob))
    return damage


def _l2c_tok(fn):
    def damage(path):
        p = path.parent / "tokenizer.bin"
        p.write_bytes(fn(p.read_bytes()))
    return damage


def _l2c_cases(size, tok_size):
    dim, vocab = SPEC["dim"], SPEC["vocab_size"]
    cases = _byte_cases("llama2c", size)
    cases += [Case("llama2c", "truncated", f"tokenizer@{n}",
                   _l2c_tok(lambda b, n=n: b[:n]), needle="tokenizer.bin")
              for n in _cut_points(tok_size, 12)]
    cases += [
        Case("llama2c", "wrong-dtype", "float64-body",
             lambda p: p.write_bytes(p.read_bytes()[:28] + np.frombuffer(
                 p.read_bytes()[28:], dtype="<f4").astype("<f8").tobytes()),
             needle="file size"),
        Case("llama2c", "wrong-dtype", "pickle-bytes",
             lambda p: p.write_bytes(b"\x80\x04" + p.read_bytes()[2:]), needle="pickle"),
        Case("llama2c", "wrong-dtype", "zip-bytes",
             lambda p: p.write_bytes(b"PK\x03\x04" + p.read_bytes()[4:]), needle="pickle"),
        Case("llama2c", "mismatched-shape", "dim", _l2c_header(dim=48), needle="file size"),
        Case("llama2c", "mismatched-shape", "vocab-sign",
             _l2c_header(vocab_size=vocab), needle="file size"),
        Case("llama2c", "mismatched-shape", "heads", _l2c_header(n_heads=3), needle="n_heads"),
        Case("llama2c", "mismatched-shape", "kv-heads", _l2c_header(n_kv_heads=3),
             needle="n_kv_heads"),
        Case("llama2c", "mismatched-shape", "odd-head-dim", _l2c_header(n_heads=32, n_kv_heads=1),
             needle="n_heads"),
        Case("llama2c", "missing-tensor", "last-bytes", _truncate_to(size - 4),
             needle="file size"),
        Case("llama2c", "missing-tensor", "tokenizer-short-vocab",
             _l2c_tok(lambda b: b[:-(8 + 1)]), needle="tokenizer.bin"),
        Case("llama2c", "missing-tensor", "tokenizer-extra-bytes",
             _l2c_tok(lambda b: b + b"\0" * 9), needle="tokenizer.bin"),
        Case("llama2c", "nan-inf", "nan-embed", _l2c_value(5, float("nan")),
             needle="embed"),
        Case("llama2c", "nan-inf", "inf-wq", _l2c_value(vocab * dim + dim + 3, float("inf")),
             needle="wq"),
        Case("llama2c", "nan-inf", "nan-token-score",
             _l2c_tok(lambda b: b[:4] + struct.pack("<f", float("nan")) + b[8:]),
             needle="token 0"),
        Case("llama2c", "unsupported-quant", "v1-magic",
             lambda p: p.write_bytes(struct.pack("<I", 0x616B3432) + p.read_bytes()[4:]),
             needle="magic"),
        Case("llama2c", "huge-size", "token-length-2^31",
             _l2c_tok(lambda b: b[:8] + struct.pack("<i", (1 << 31) - 1) + b[12:]),
             needle="token 0"),
        Case("llama2c", "huge-size", "max-token-length-2^31",
             _l2c_tok(lambda b: struct.pack("<i", (1 << 31) - 1) + b[4:]),
             needle="max_token_length"),
        Case("llama2c", "huge-size", "negative-token-length",
             _l2c_tok(lambda b: b[:8] + struct.pack("<i", -5) + b[12:]), needle="token 0"),
    ]
    for key in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                "seq_len"):
        for value in (0, -1, 10**9, (1 << 31) - 1, 1 << 24):
            cases.append(Case("llama2c", "absurd-dims", f"{key}={value}",
                              _l2c_header(**{key: value}), needle=None))
    return cases


# -- native .hwq

def _hwq_meta(fn):
    def damage(path):
        def edit(header):
            meta = json.loads(header["__metadata__"]["hardwire"])
            fn(meta)
            header["__metadata__"]["hardwire"] = json.dumps(meta)
        _edit_header(path, edit)
    return damage


def _set(keys, value):
    def fn(meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        if value is _DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return fn


def _hwq_cases(size):
    wq = "layers.0.wq.values"
    cases = _byte_cases("native", size)
    cases += _safetensors_cases("native", wq, "layers.0.attn_norm.gain")
    cases += [
        Case("native", "wrong-dtype", "values-I16", _st(_st_dtype(wq, "I16", 2)), needle=wq),
        Case("native", "wrong-dtype", "spec-dim-string", _hwq_meta(_set(["spec", "dim"], "32")),
             needle="dim"),
        Case("native", "wrong-dtype", "meta-not-json",
             lambda p: _edit_header(p, lambda h: h["__metadata__"].update(hardwire="{")),
             needle="__metadata__.hardwire"),
        Case("native", "wrong-dtype", "meta-absent",
             lambda p: _edit_header(p, lambda h: h.pop("__metadata__")),
             needle="__metadata__.hardwire"),
        Case("native", "wrong-dtype", "format-name", _hwq_meta(_set(["format"], "gguf")),
             needle="format"),
        Case("native", "wrong-dtype", "version-2", _hwq_meta(_set(["version"], 2)),
             needle="version"),
        Case("native", "mismatched-shape", "spec-dim", _hwq_meta(_set(["spec", "dim"], 48)),
             needle="shape"),
        Case("native", "mismatched-shape", "context", _hwq_meta(_set(["context"], 17)),
             needle="rope.cos"),
        Case("native", "mismatched-shape", "layers-list", _hwq_meta(_set(["layers"], [])),
             needle="layers"),
        Case("native", "mismatched-shape", "tokenizer-pieces",
             _hwq_meta(_set(["tokenizer", "pieces"], ["a"])), needle="tokenizer.pieces"),
        Case("native", "missing-tensor", "wq.M", _st(_drop_tensor, "layers.0.wq.M"),
             needle="layers.0.wq.M"),
        Case("native", "missing-tensor", "rope.cos", _st(_drop_tensor, "rope.cos"),
             needle="rope.cos"),
        Case("native", "missing-tensor", "linears-entry",
             _hwq_meta(_set(["linears", "layers.0.w2"], _DELETE)), needle="layers.0.w2"),
        Case("native", "missing-tensor", "scales-resid",
             _hwq_meta(_set(["scales", "resid"], _DELETE)), needle="scales.resid"),
        Case("native", "missing-tensor", "spec-field",
             _hwq_meta(_set(["spec", "n_heads"], _DELETE)), needle="spec"),
        Case("native", "nan-inf", "row-scale-nan",
             _st(_edit_tensor, "layers.0.wq.row_scale", _f64_with(float("nan"))),
             needle="layers.0.wq.row_scale"),
        Case("native", "nan-inf", "scale-inf",
             lambda p: _edit_header(p, lambda h: h["__metadata__"].update(
                 hardwire=h["__metadata__"]["hardwire"].replace('"in_scale":', '"in_scale":1e999,'
                                                                '"x":', 1))),
             needle="in_scale"),
        Case("native", "unsupported-quant", "bits-3",
             _hwq_meta(_set(["linears", "layers.0.wq", "bits"], 3)), needle="bits"),
        Case("native", "unsupported-quant", "values-out-of-range",
             _st(_edit_tensor, wq, lambda raw: b"\x80" + raw[1:]), needle=wq),
        Case("native", "unsupported-quant", "M-out-of-range",
             _st(_edit_tensor, "layers.0.wq.M", lambda raw: struct.pack("<q", 5) + raw[8:]),
             needle="layers.0.wq.M"),
        Case("native", "unsupported-quant", "table-changed",
             _st(_edit_tensor, "exp2", lambda raw: b"\0\0" + raw[2:]), needle="exp2"),
        Case("native", "unsupported-quant", "extra-tensor",
             _st(_hwq_extra_tensor), needle="extra"),
    ]
    for key in ("dim", "n_layers", "vocab_size", "ffn_dim", "max_seq_len", "n_heads"):
        for value in (10**9, 1 << 40):
            cases.append(Case("native", "absurd-dims", f"spec.{key}={value}",
                              _hwq_meta(_set(["spec", key], value)), needle=None))
    for key, value in (("context", 1 << 40), ("group_size", 1 << 40), ("group_size", 0)):
        cases.append(Case("native", "absurd-dims", f"{key}={value}",
                          _hwq_meta(_set([key], value)), needle=key))
    return cases


def _f64_with(value, index=1):
    def fn(raw):
        a = np.frombuffer(raw, dtype="<f8").copy()
        a[index] = value
        return a.tobytes()
    return fn


def _hwq_extra_tensor(path):
    header, data = read_safetensors_raw(path)
    header["extra"] = {"dtype": "I8", "shape": [1], "data_offsets": [len(data), len(data) + 1]}
    write_safetensors_raw(path, header, data + b"\0")


def _bare_cases(size):
    """A lone ``.safetensors`` is no model format of its own: refused by name."""
    return [Case("safetensors", "truncated", str(n), _truncate_to(n)) for n in (0, 8, size // 2)]\
        + [Case("safetensors", "wrong-dtype", "as-is", lambda p: None, needle="unknown")]


def corpus(seeds):
    """Every :class:`Case` for the seed models ``seeds`` (from :func:`seed_models`)."""
    hf = seeds["huggingface"]
    sizes = {name: (hf / name).stat().st_size
             for name in ("model.safetensors", "config.json", "tokenizer.json")}
    return (_hf_cases(sizes) + _gguf_cases(seeds["gguf"])
            + _l2c_cases(seeds["llama2c"].stat().st_size,
                         (seeds["llama2c"].parent / "tokenizer.bin").stat().st_size)
            + _hwq_cases(seeds["native"].stat().st_size)
            + _bare_cases(seeds["safetensors"].stat().st_size))


def fresh_copy(seeds, front_end, where):
    """Copy the ``front_end`` seed (with its folder) into ``where``; return the path to load."""
    seed = seeds[front_end]
    folder = seed if seed.is_dir() else seed.parent
    shutil.copytree(folder, where / folder.name)
    return where / folder.name if seed.is_dir() else where / folder.name / seed.name
