"""Arguments and loading steps shared by the model commands (run, inspect, quality, ...)."""

import json

from rich.console import Console

from ..errors import ConfigError, HardwireError

__all__ = ["add_model_argument", "add_weight_arguments", "load", "quantized", "quantized_from_args",
           "parse_token_ids", "encode_prompt", "decode", "print_json", "console", "WEIGHT_FORMATS"]

WEIGHT_FORMATS = ("int8", "int4", "ternary", "keep")

console = Console(stderr=True)   # progress and tables; stdout stays clean for --json


def add_model_argument(parser):
    parser.add_argument("model", metavar="MODEL", nargs="?", default="kjv",
                        help="Hugging Face directory, .gguf, llama2.c .bin, .hwq file, or the name "
                             "of a bundled model (default: kjv)")
    parser.add_argument("--tokenizer", metavar="FILE", default=None,
                        help="llama2.c tokenizer.bin when it is not beside the checkpoint")


def add_weight_arguments(parser):
    parser.add_argument("--weights", choices=WEIGHT_FORMATS, default="int8",
                        help="weight format of the integer model (keep: GGUF blocks as stored)")
    parser.add_argument("--group-size", type=int, default=None, metavar="G",
                        help="inputs per weight scale (default: one scale per output row)")
    parser.add_argument("--context", type=int, default=None, metavar="N",
                        help="maximum context of the integer model (default: the model's)")


def add_prompt_arguments(parser, *, what, new_tokens):
    """``--prompt TEXT`` and ``--tokens IDS`` (each repeatable, one ``what`` each) and ``-n``."""
    parser.add_argument("--prompt", metavar="TEXT", action="append", default=None,
                        help=f"{what} as text (uses the model tokenizer); repeat for several")
    parser.add_argument("--tokens", metavar="IDS", action="append", default=None,
                        help=f"{what} as comma-separated token ids; repeat for several")
    parser.add_argument("-n", "--new-tokens", type=int, default=new_tokens, metavar="N",
                        help=f"new tokens per {what.split()[-1]} (default {new_tokens})")


def quantized_from_args(model, args):
    return quantized(model, weights=args.weights, group_size=args.group_size,
                     context=args.context)


def load(args):
    """The model named on the command line: a ``LoadedModel`` or, for ``.hwq``, a QuantizedModel."""
    from ..gen.frontends import load_model
    with console.status(f"loading {args.model}"):
        return load_model(args.model, tokenizer_path=args.tokenizer)


def quantized(model, *, weights, group_size=None, context=None):
    """``model`` quantized as asked (a ``.hwq`` QuantizedModel is returned as it is)."""
    from ..gen.quantize import quantize
    from ..gen.quantized_model import QuantizedModel
    if isinstance(model, QuantizedModel):
        return model
    with console.status(f"quantizing to {weights}" + (f", groups of {group_size}"
                                                        if group_size else "")):
        return quantize(model, weights=weights, group_size=group_size, context=context)


def parse_token_ids(text, vocab_size):
    """``"1,2,3"`` → ``[1, 2, 3]``, refusing non-integers and ids outside the vocabulary."""
    ids = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(f"--tokens: {item!r} is not an integer token id") from None
        if not 0 <= value < vocab_size:
            raise ConfigError(f"--tokens: token id {value} is outside the vocabulary "
                              f"(expected 0..{vocab_size - 1})")
        ids.append(value)
    if not ids:
        raise ConfigError("--tokens: give at least one token id, e.g. --tokens 1,2,3")
    return ids


def encode_prompt(tokenizer, text, spec):
    if tokenizer is None:
        raise ConfigError("this model carries no tokenizer: give the prompt as --tokens 1,2,3")
    ids = [int(i) for i in tokenizer.encode(text)]
    if spec.bos_id is not None:
        ids = [spec.bos_id, *ids]
    if not ids:
        raise ConfigError("--prompt: the prompt encodes to no tokens")
    return ids


def decode(tokenizer, ids):
    if tokenizer is None:
        return None
    try:
        return tokenizer.decode(ids)
    except HardwireError:
        return None


def print_json(data):
    print(json.dumps(data, indent=2, sort_keys=False))


def engine_words(config):
    """How a design computes, for a summary line: "serial engine", "lanes N" or "lanes N x R
    rows", from ``CompileOptions.as_dict()`` or a manifest's ``config``."""
    if config["engine"] == "serial":
        return "serial engine"
    rows = config.get("matrix_rows", 1)
    return f"lanes {config['lanes']}" + (f" x {rows} rows" if rows > 1 else "")
