"""``hardwire quality``: cross-entropy and top-1 agreement of the integer model per format."""

from pathlib import Path

from rich.table import Table

from ..errors import ConfigError
from .common import add_model_argument, console, load, print_json

NAME = "quality"
HELP = "measure cross-entropy (float vs integer) and top-1 agreement on held-out text"

DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "data" / "kjv-heldout.txt"
DEFAULT_FORMATS = "int8,int4:32,ternary"


def add_arguments(parser):
    add_model_argument(parser)
    parser.add_argument("--text", metavar="FILE", default=None,
                        help="held-out text (default: data/kjv-heldout.txt)")
    parser.add_argument("--formats", default=DEFAULT_FORMATS, metavar="LIST",
                        help="comma-separated weight formats, FORMAT[:GROUP] (default "
                             f"{DEFAULT_FORMATS}); FORMAT is int8, int4, ternary or keep")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="score at most N tokens of the text")
    parser.add_argument("--context", type=int, default=None, metavar="N",
                        help="maximum context of the integer model (default: the model's)")
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")


def parse_formats(text):
    """``"int8,int4:32"`` → ``[("int8", None), ("int4", 32)]`` with exact errors."""
    formats = []
    for item in text.split(","):
        name, _, group = item.strip().partition(":")
        if name not in ("int8", "int4", "ternary", "keep"):
            raise ConfigError(f"--formats: unknown weight format {name!r} "
                              "(expected int8, int4, ternary or keep)")
        try:
            group_size = int(group) if group else None
        except ValueError:
            raise ConfigError(f"--formats: group size {group!r} of {name} is not an integer"
                              ) from None
        if group_size is not None and group_size < 1:
            raise ConfigError(f"--formats: group size of {name} must be positive, not {group}")
        formats.append((name, group_size))
    return formats


def _token_ids(model, args):
    path = Path(args.text) if args.text else DEFAULT_TEXT
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--text: cannot read {path}: {exc}") from None
    if model.tokenizer is None:
        raise ConfigError(f"{args.model} carries no tokenizer, so it cannot read {path}")
    ids = [int(i) for i in model.tokenizer.encode(text)]
    if args.max_tokens is not None:
        ids = ids[:args.max_tokens + 1]
    if len(ids) < 2:
        raise ConfigError(f"--text: {path} encodes to {len(ids)} tokens; at least 2 are needed")
    return ids, path


def run(args):
    from ..gen.quality import compare_formats
    from ..gen.quantized_model import QuantizedModel

    formats = parse_formats(args.formats)
    model = load(args)
    if isinstance(model, QuantizedModel):
        raise ConfigError(f"{args.model} holds only the integer model; quality compares it with "
                          "the float model, so give the source model instead")
    ids, path = _token_ids(model, args)
    with console.status(f"scoring {len(ids) - 1} tokens") as status:
        rows = compare_formats(model, ids, formats, context=args.context, progress=lambda w:
                               status.update(f"scoring {len(ids) - 1} tokens at {w}"))
    report = {"model": str(model.source), "text": str(path), "results": rows}
    if args.json:
        print_json(report)
        return 0
    table = Table(title=f"quality of {args.model} on {path.name} ({rows[0]['tokens']} tokens)")
    for column in ("weights", "groups", "float nats/tok", "int nats/tok", "Δ nats", "top-1 agree"):
        table.add_column(column, justify="left" if column == "weights" else "right")
    for r in rows:
        table.add_row(r["weights"], str(r["group_size"] or "row"),
                      f"{r['float_cross_entropy']:.4f}", f"{r['int_cross_entropy']:.4f}",
                      f"{r['delta_nats']:+.4f}", f"{100 * r['top1_agreement']:.1f} %")
    console.print(table)
    return 0
