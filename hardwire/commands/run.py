"""``hardwire run``: generate tokens greedily with the float or the golden integer model."""

from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from .common import (
    add_model_argument,
    add_weight_arguments,
    console,
    decode,
    encode_prompt,
    load,
    parse_token_ids,
    print_json,
    quantized_from_args,
)

NAME = "run"
HELP = "generate tokens with the float reference or the golden integer model"


def add_arguments(parser):
    add_model_argument(parser)
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", metavar="TEXT", help="prompt text (uses the model tokenizer)")
    prompt.add_argument("--tokens", metavar="IDS", help="prompt as comma-separated token ids")
    parser.add_argument("-n", "--new-tokens", type=int, default=32, metavar="N",
                        help="number of tokens to generate (default 32)")
    parser.add_argument("--engine", choices=("float", "golden"), default="golden",
                        help="float reference or golden integer model (default golden)")
    add_weight_arguments(parser)
    parser.add_argument("--no-eos", action="store_true",
                        help="keep generating past the end-of-sequence token")
    parser.add_argument("--json", action="store_true", help="print JSON to stdout")


def run(args):
    from ..gen.quantized_model import QuantizedModel
    from ..sim.golden import GoldenModel
    from ..sim.reference import FloatModel

    if args.new_tokens < 0:
        raise ConfigError(f"-n must be 0 or more, not {args.new_tokens}")
    model = load(args)
    spec, tokenizer = model.spec, model.tokenizer
    if args.tokens is not None:
        prompt = parse_token_ids(args.tokens, spec.vocab_size)
    else:
        prompt = encode_prompt(tokenizer, args.prompt, spec)
    if args.engine == "float":
        if isinstance(model, QuantizedModel):
            raise ConfigError(f"{args.model} holds only the integer model; --engine float needs "
                              "the source model (HF directory, GGUF or llama2.c file)")
        engine = FloatModel(model)
    else:
        engine = GoldenModel(quantized_from_args(model, args))
    with console.status(f"generating {args.new_tokens} tokens ({args.engine})"):
        tokens = engine.generate(prompt, args.new_tokens, stop_at_eos=not args.no_eos)
    text = decode(tokenizer, tokens)
    if args.json:
        print_json({"tokens": tokens, "text": text, "prompt_tokens": prompt,
                    "engine": args.engine,
                    "weights": None if args.engine == "float" else args.weights})
        return 0
    table = Table(title=f"hardwire run: {args.model} ({args.engine})", show_header=False)
    table.add_row("prompt tokens", ",".join(map(str, prompt)))
    table.add_row("new tokens", ",".join(map(str, tokens)))
    if text is not None:
        table.add_row("text", Text(decode(tokenizer, prompt) or "") + Text(text, style="bold"))
    console.print(table)
    print(text if text is not None else ",".join(map(str, tokens)))
    return 0
