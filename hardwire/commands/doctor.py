"""``hardwire doctor``: print every tool's version and whether it works."""

import json

from rich.console import Console
from rich.table import Table

from ..errors import ToolchainError
from ..toolchain import check_tools

NAME = "doctor"
HELP = "check the toolchain: versions of every tool and whether each one works"


def add_arguments(parser):
    parser.add_argument("--fpga", action="store_true",
                        help="also run the YoWASP FPGA tools (first run compiles them, ~1 min)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args):
    statuses = check_tools(run_fpga=args.fpga)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        table = Table(title="hardwire toolchain")
        for column in ("tool", "version", "status", "detail"):
            table.add_column(column)
        for s in statuses:
            state = "ok" if s.ok else ("MISSING" if s.required else "missing (optional)")
            table.add_row(s.name, s.version, state, s.detail)
        Console().print(table)
    broken = [s.name for s in statuses if s.required and not s.ok]
    if broken:
        raise ToolchainError(f"required tools missing or broken: {', '.join(broken)}; "
                             "run `make setup` (details in the table above)")
    return 0
