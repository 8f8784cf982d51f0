"""What every ``memorose`` subcommand shares so operator mistakes end in one line, not a
traceback: the parser class (one-line usage errors, defaults shown in ``--help``), argument
types for counts and ports, and pre-flight checks of ports and data directories.

Every error here names the problem and the fix; ``memorose.cli.main`` prints it on one
line and exits with status 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, NoReturn


class OperatorError(Exception):
    """A mistake in how memorose was started (a flag, a port, a directory): one line that
    says what is wrong and how to fix it; exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, in words where the raw value would say little."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: {_shown(action)})"


def _shown(action: argparse.Action) -> str:
    if action.default is None or action.default == []:
        return "none"
    if action.default is False and action.nargs == 0:
        return "off"
    return "%(default)s"


class Parser(argparse.ArgumentParser):
    """Usage errors on one line (argparse prints the whole usage block first otherwise);
    subcommand parsers inherit this class through ``add_subparsers``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type for counts (--nodes, --shards, ...): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small; give 1 or more")
    return value


def port_number(text: str) -> int:
    """An argparse type for TCP ports: 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def check_port_free(host: str, port: int, what: str, fix: str) -> None:
    """Bind HOST:PORT as the server will (SO_REUSEADDR) and let go: a port someone listens on,
    or an address this machine does not have, is reported before anything starts."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OperatorError(f"{what} host {host!r} cannot be resolved ({exc.strerror}): {fix}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OperatorError(f"{what} {host}:{port} {_bind_problem(exc)}: {fix}") from None


def _bind_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "is already in use by another process"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "is not an address of this machine"
    if exc.errno == errno.EACCES:
        return "needs privileges this user lacks (ports below 1024)"
    return f"cannot be bound ({exc.strerror})"


def check_data_dir(path: str | Path, flag: str = "--data-dir") -> Path:
    """Create the data directory (and its parents) if needed and prove it is writable, so a
    typo or a read-only mount is one line now rather than a traceback from RocksDB later."""
    directory = Path(path)
    fix = f"create it with write access or pass another {flag}"
    if directory.exists() and not directory.is_dir():
        raise OperatorError(f"data dir {directory} exists and is not a directory: pass another {flag}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise OperatorError(f"data dir {directory} is not usable ({problem}): {fix}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OperatorError(f"data dir {directory} is not writable: {fix}")
    return directory


def split_hostport(value: str) -> tuple[str, int]:
    """'HOST:PORT' as validated by the settings (they reject anything else first)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
