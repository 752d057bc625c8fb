# amaranth: UnusedElaboratable=no
"""``hardwire compile``: a whole model → ``hardwire_top.v`` + ``manifest.json``.

Options come from ``--config FILE.yaml`` (keys ``weights``, ``group_size``, ``lanes``,
``context``, ``rom_style``, ``engine``, ``weight_store``) with command-line flags on top; the
manifest records what was resolved.
"""

import hashlib
from pathlib import Path

from .common import WEIGHT_FORMATS, add_model_argument, console, engine_words, load, quantized

NAME = "compile"
HELP = "compile a whole model into Verilog (hardwire_top.v) and manifest.json"

DEFAULT_LANES = 8

__all__ = ["add_compile_arguments", "resolve", "source_hash", "compile_from_args"]


def add_compile_arguments(parser):
    """The options shared by ``compile`` and ``verify``."""
    add_model_argument(parser)
    parser.add_argument("--weights", choices=WEIGHT_FORMATS, default=None,
                        help="weight format (default int8; keep: GGUF blocks as stored)")
    parser.add_argument("--group-size", type=int, default=None, metavar="G",
                        help="inputs per weight scale (default: one scale per output row)")
    parser.add_argument("--lanes", type=int, default=None, metavar="N",
                        help=f"multiply-accumulates per cycle of every unit (default "
                             f"{DEFAULT_LANES})")
    parser.add_argument("--vector-lanes", type=int, default=None, metavar="N",
                        help="elements per cycle of the element-wise units (norms, RoPE, "
                             "SwiGLU, embedding, argmax, attention output; default: --lanes; "
                             "the residual adds keep --lanes): fewer "
                             "cost a few cycles and save most of the multipliers")
    parser.add_argument("--matrix-rows", type=int, default=None, metavar="R",
                        help="rows of the MAC array (default 1): every matrix product works on "
                             "R rows at once, R x --lanes multipliers, for matrices with fewer "
                             "inputs than lanes would use")
    parser.add_argument("--engine", choices=("lanes", "serial"), default=None,
                        help="lanes (default): a datapath per unit with --lanes multiply-"
                             "accumulates a cycle; serial: the whole model on one multiplier, "
                             "for the smallest FPGAs (iCE40 UP5K)")
    parser.add_argument("--weight-store", choices=("rom", "flash"), default=None,
                        help="rom (default): the weights are constants of the design; flash "
                             "(serial engine): a RAM takes them at power-up, read from the "
                             "board's SPI flash (hardwire_weights.bin), so int8 weights fit "
                             "the iCEBreaker")
    parser.add_argument("--context", type=int, default=None, metavar="N",
                        help="KV cache depth (default: the model's context)")
    parser.add_argument("--rom-style", choices=("auto", "inline", "files"), default=None,
                        help="ROM contents inline in the Verilog or in $readmemb files beside "
                             "it (default auto: files for large models)")
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="YAML file with any of weights, group_size, lanes, vector_lanes, "
                             "matrix_rows, context, rom_style, engine, weight_store; flags "
                             "override it")


def add_arguments(parser):
    add_compile_arguments(parser)
    parser.add_argument("--out", default="build/verilog", metavar="DIR",
                        help="output directory (default build/verilog)")


def resolve(args):
    """The :class:`~hardwire.gen.compile.CompileOptions` of the YAML file and the flags."""
    from ..gen.compile import CompileOptions, load_options
    options = load_options(args.config, weights=args.weights, group_size=args.group_size,
                           lanes=args.lanes, context=args.context,
                           rom_style=args.rom_style, vector_lanes=args.vector_lanes,
                           engine=args.engine, weight_store=args.weight_store,
                           matrix_rows=args.matrix_rows)
    if args.lanes is None and args.config is None:
        options = CompileOptions(**{**options.as_dict(), "lanes": DEFAULT_LANES})
    return options


def source_hash(model):
    """sha256 of the model's source file (or of every file of its directory, by relative name);
    of its name when it has no file."""
    h = hashlib.sha256()
    path = Path(str(getattr(model, "source", "")))
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    else:
        h.update(str(model.spec.name).encode())
        return h.hexdigest()
    for name, p in files:
        h.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def compile_from_args(args, out_dir):
    """Load, quantize and compile as the arguments say; returns ``(model, qm, decoder,
    manifest)``."""
    from ..gen.compile import check_lanes, compile_model
    from ..gen.hardware import check_context
    options = resolve(args)
    model = load(args)
    # Before quantizing: a huge declared context would build huge RoPE tables first.
    check_context(model.spec, options.context, quantized_context=getattr(model, "context", None))
    qm = quantized(model, weights=options.weights, group_size=options.group_size,
                   context=options.context)
    if options.engine != "serial":
        check_lanes(qm, options.lanes)
    what = engine_words(options.as_dict())
    with console.status(f"compiling {qm.spec.name} ({what}) to Verilog"):
        decoder, manifest = compile_model(qm, options, out_dir, source_hash=source_hash(model))
    return model, qm, decoder, manifest


def run(args):
    out = Path(args.out)
    _, qm, _, manifest = compile_from_args(args, out)
    cyc = manifest["cycles_per_token"]
    roms = manifest["files"]["rom_files"]
    config = manifest["config"]
    engine = engine_words(config)
    console.print(f"wrote {out / manifest['files']['verilog']} "
                  f"({manifest['files']['verilog_bytes']:,} bytes), "
                  f"{f'{len(roms)} ROM files, ' if roms else ''}{out / 'manifest.json'}: "
                  f"{qm.spec.name}, {config['weights']}, {engine}, "
                  f"{manifest['rom_bits']['total']:,} ROM bits; "
                  f"{cyc['formula']}")
    return 0
