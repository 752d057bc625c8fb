"""``hardwire chat``: talk to a board programmed by ``hardwire fpga`` over its serial port.

Give the model and the compile options the board was built with: the prompt is tokenized on the
host, and every status frame must carry the design's model id (a board built from another model
or other options is refused). Each ``--prompt``/``--tokens`` runs in turn; without either, lines
are read from standard input. The first turn begins a new sequence; later turns continue it (the
last generated token is sent back first) until the context is full, when the next turn starts
over. Generated text goes to standard output as it arrives.

Exit status 0; 1 when the board reports an error (a token id outside the vocabulary, a link
error, or a flash that does not hold the design's weights); 2 for bad options or no answer from
the board.
"""

import sys

from ..errors import ConfigError, ToolchainError
from .common import add_prompt_arguments, console, decode, parse_token_ids
from .compile import add_compile_arguments, resolve

NAME = "chat"
HELP = "talk to a board programmed by `hardwire fpga` over its serial port"

DEFAULT_BAUD = 115200


def add_arguments(parser):
    add_compile_arguments(parser)
    parser.add_argument("--port", required=True, metavar="DEVICE",
                        help="serial port of the board, e.g. /dev/ttyUSB0 (any pyserial URL)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"UART baud rate the design was built with (default {DEFAULT_BAUD})")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for each reply frame (default 5)")
    add_prompt_arguments(parser, what="a turn", new_tokens=64)


def open_port(url, baud, timeout):
    """The serial port ``url`` (a device path or any pyserial URL)."""
    try:
        import serial
    except ImportError:
        raise ToolchainError("`hardwire chat` needs pyserial (pip install pyserial)") from None
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as exc:
        raise ConfigError(f"--port {url}: cannot open it ({exc})") from None


def _turns(model, args):
    """Each turn's token ids (no BOS): ``--prompt`` texts, then ``--tokens``, else stdin lines."""
    spec = model.spec
    given = [("text", t) for t in args.prompt or ()] + [("ids", t) for t in args.tokens or ()]
    if not given:
        given = (("text", line.rstrip("\n")) for line in sys.stdin)
    for kind, value in given:
        if kind == "ids":
            yield parse_token_ids(value, spec.vocab_size)
        elif value.strip():
            if model.tokenizer is None:
                raise ConfigError("this model carries no tokenizer: give turns as --tokens 1,2,3")
            yield [int(i) for i in model.tokenizer.encode(value)]


def run(args):
    from ..board_link import BoardLink
    from ..gen.compile import WEIGHTS_IMAGE, inputs_hash, resolve_lanes
    from ..gen.fpga import program_weights_command
    from ..hdl.weight_loader import FLASH_OFFSET
    from .common import load, quantized

    n = args.new_tokens
    if not 0 < n < 1 << 16:
        raise ConfigError(f"-n must be from 1 to {(1 << 16) - 1}, not {n}")
    options = resolve(args)
    model = load(args)
    qm = quantized(model, weights=options.weights, group_size=options.group_size,
                   context=options.context)
    model_id = int(inputs_hash(qm, resolve_lanes(qm, options))[:4], 16)
    context = options.context or qm.context
    link = BoardLink(open_port(args.port, args.baud, args.timeout), model_id=model_id)
    status = link.status()
    console.print(f"board on {args.port}: model id {status.value:#06x}, busy {int(status.busy)}")
    last, used = None, 0
    for prompt in _turns(model, args):
        fresh = last is None or used + len(prompt) + n > context
        bos = [] if model.spec.bos_id is None else [model.spec.bos_id]
        ids = [*bos, *prompt] if fresh else [last, *prompt]

        def show(token):
            text = decode(model.tokenizer, [token])
            sys.stdout.write(text if text is not None else f"{token},")
            sys.stdout.flush()

        reply = link.generate(ids, n, new_sequence=fresh, on_token=show)
        sys.stdout.write("\n")
        status = reply.status
        if status.weights_error:
            console.print(f"the board's SPI flash does not hold this design's weights "
                          f"(WEIGHTS_ERROR): program {WEIGHTS_IMAGE}, which `hardwire fpga` "
                          f"wrote beside the bitstream, at {FLASH_OFFSET:#x} "
                          f"({program_weights_command()})")
            return 1
        if status.error or status.link_error:
            what = "a token id outside the vocabulary" if status.error else "a link error"
            console.print(f"the board reports {what}; the next turn starts a new sequence")
            return 1
        used = (0 if fresh else used) + len(ids) + max(0, len(reply.tokens) - 1)
        last = reply.tokens[-1] if reply.tokens and not status.context_full else None
        if status.context_full:
            console.print("the context is full: the next turn starts a new sequence")
    return 0
