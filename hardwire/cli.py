"""The ``hardwire`` command line: a dispatcher over ``hardwire.commands.*`` modules.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Errors derived from :class:`~hardwire.errors.HardwireError` print one paragraph and exit with 2;
``--debug`` shows the traceback instead.
"""

import argparse
import importlib
import sys

from . import __version__
from .errors import HardwireError

__all__ = ["main", "COMMANDS"]

# Subcommands are listed here as they become real.
COMMANDS = ["doctor", "inspect", "run", "quality", "emit", "compile", "verify", "fpga", "silicon",
            "chat", "bench"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hardwire",
        description="Compile quantized Llama-style models into Verilog with ROM-constant weights.")
    parser.add_argument("--version", action="version", version=f"hardwire {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks instead of one-paragraph errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"hardwire.commands.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show Python tracebacks instead of one-paragraph errors")
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except HardwireError as exc:
        if args.debug:
            raise
        print(f"hardwire {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"hardwire {args.command}: interrupted", file=sys.stderr)
        return 130
