"""One module per ``hardwire`` subcommand (see :mod:`hardwire.cli`)."""
