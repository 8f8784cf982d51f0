"""The ``memorose`` command line.

Subcommands are contributed by the packages that implement them through the
``memorose.commands`` entry-point group (``node`` registers ``up``, ``node``, ``admin`` and
``bench``), so this library never imports the node or the gateway. ``status`` and ``mcp``
are the library's own: they only talk HTTP.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from memorose import __version__, status
from memorose import mcp as mcp_command
from memorose.cli_support import OperatorError, Parser
from memorose.errors import ConfigError
from memorose.providers.embeddings import prepare as prepare_model

# One BLAS thread per search, set before anything imports numpy (the subcommands are loaded
# later): the node runs several searches at once on its read threads, and a multi-threaded
# OpenBLAS matrix-vector product waits for its slowest thread, so on a busy 2-core machine
# p50 went from 0.3 to 14 ms at 10K vectors (docs/benchmarks.md). The environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (``command`` names a plugged-in command) only that
    command's group: ``memorose node`` then never imports the gateway's or the benchmarks'
    modules, which held ~20 MiB of an idle node (networkx, the soak tooling)."""
    parser = Parser(prog="memorose", description="Memorose memory database")
    parser.add_argument("--version", action="version", version=f"memorose {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much the process logs to stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugged = sorted(entry_points(group="memorose.commands"), key=lambda e: e.name)
    if any(ep.name == command for ep in plugged):
        plugged = [ep for ep in plugged if ep.name == command]
    for ep in plugged:
        ep.load()(sub)
    status.register(sub)  # the library's own: it only talks HTTP
    mcp_command.register(sub)  # imports the `mcp` package only when it runs
    prepare_model.register(sub)  # loads the model only when it runs
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` asks for (its first word after the global options), or None
    when it asks for help or the version (then every command is listed)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif word in ("-h", "--help", "--version"):
            return None
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(command_named(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, OperatorError) as exc:
        return operator_error(exc)
    except KeyboardInterrupt:
        return 130


def operator_error(exc: Exception) -> int:
    """One line on stderr, exit status 2: operators read the message, not a traceback."""
    print("memorose: " + " ".join(str(exc).split()), file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
