"""Operator mistakes end in one line on stderr and exit status 2, never a traceback, and every
flag of every subcommand says what it does and its default (issue 15)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memorose.cli import build_parser
from memorose.cli_support import HelpFormatter
from node.runner import free_port


@pytest.fixture(scope="module")
def held_port() -> Iterator[int]:
    """A port something listens on, as when another node already runs there."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def _cases(tmp: Path, held: int) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (argv after `memorose`, extra environment, a fragment the line must contain)."""
    a_file = tmp / "a-file"
    a_file.write_text("not a directory\n")
    (tmp / "bad.toml").write_text("http = [\n")
    (tmp / "unknown.toml").write_text("no_such_setting = 1\n")
    data = ["--data-dir", str(tmp / "data")]
    free = free_port()
    shard = "s1=http://127.0.0.1:1"
    return {
        "http port in use": (["up", "--port", str(held), *data], {}, "already in use"),
        "raft port in use": (
            ["node", "--http", f"127.0.0.1:{free}", "--raft", f"127.0.0.1:{held}", *data],
            {},
            "Raft address",
        ),
        "gateway port in use": (["gateway", "--http", f"127.0.0.1:{held}", "--shard", shard], {}, "in use"),
        "cluster port in use": (["up", "--nodes", "3", "--port", str(held - 2), *data], {}, "in use"),
        "data dir is a file": (["up", "--port", str(free), "--data-dir", str(a_file)], {}, "not a directory"),
        "data dir under a file": (
            ["up", "--port", str(free), "--data-dir", str(a_file / "sub" / "data")],
            {},
            "data dir",
        ),
        "gateway without shards": (["gateway", "--http", f"127.0.0.1:{free}"], {}, "--shard"),
        "gateway bad shard flag": (["gateway", "--shard", "s1"], {}, "NAME=URL"),
        "nodes 0": (["up", "--nodes", "0", *data], {}, "--nodes"),
        "shards 0": (["up", "--shards", "0", *data], {}, "--shards"),
        "nodes not a number": (["up", "--nodes", "three", *data], {}, "--nodes"),
        "port 0": (["up", "--port", "0", *data], {}, "--port"),
        "cluster past the last port": (["up", "--nodes", "3", "--port", "65533", *data], {}, "65535"),
        "missing config file": (["node", "--config", str(tmp / "nope.toml"), *data], {}, "nope.toml"),
        "config not TOML": (["node", "--config", str(tmp / "bad.toml"), *data], {}, "not valid TOML"),
        "config unknown key": (["node", "--config", str(tmp / "unknown.toml"), *data], {}, "no_such_setting"),
        "gateway config not TOML": (["gateway", "--config", str(tmp / "bad.toml")], {}, "not valid TOML"),
        "bad env number": (
            ["node", "--http", f"127.0.0.1:{free}", *data],
            {"MEMOROSE_LIMITS__MAX_BODY_BYTES": "lots"},
            "max_body_bytes",
        ),
        "bad env list": (["node", "--http", f"127.0.0.1:{free}", *data], {"MEMOROSE_PEERS": "n2"}, "peers"),
        "bad log level": (["--log-level", "LOUD", "up", *data], {}, "--log-level"),
        "admin url unreachable": (
            ["admin", "reindex", "--url", f"http://127.0.0.1:{free}", "--admin-key", "x"],
            {},
            "cannot reach",
        ),
    }


#: The cases of ``_cases`` (which needs the test's tmp_path to build them).
NAMES = [
    "http port in use",
    "raft port in use",
    "gateway port in use",
    "cluster port in use",
    "data dir is a file",
    "data dir under a file",
    "gateway without shards",
    "gateway bad shard flag",
    "nodes 0",
    "shards 0",
    "nodes not a number",
    "port 0",
    "cluster past the last port",
    "missing config file",
    "config not TOML",
    "config unknown key",
    "gateway config not TOML",
    "bad env number",
    "bad env list",
    "bad log level",
    "admin url unreachable",
]


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """``memorose ARGV`` in its own process group: a check that did not fire would start a
    server (or a whole local cluster), which is then killed with its children, not left behind."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memorose.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"memorose {' '.join(argv)} still ran after {timeout} s: it started") from None
    return proc.returncode, stderr


@pytest.mark.parametrize("name", NAMES)
def test_operator_error_is_one_line_and_exit_2(name: str, tmp_path: Path, held_port: int) -> None:
    argv, env, fragment = _cases(tmp_path, held_port)[name]
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOROSE_")}
    returncode, stderr = _run([*argv], {**clean_env, "MEMOROSE_ADMIN_KEY": "adm_cli_test", **env}, tmp_path)
    lines = stderr.strip().splitlines()
    assert returncode == 2, (name, returncode, stderr)
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, (name, stderr)
    assert fragment in lines[0], (name, lines[0])
    assert not (tmp_path / "data" / "rocks").exists(), "nothing may start before the checks pass"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_flag_of_every_subcommand_has_help_and_shows_its_default() -> None:
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {
        "memorose",
        "memorose up",
        "memorose node",
        "memorose gateway",
        "memorose gateway rebalance",
        "memorose admin reindex",
        "memorose status",
        "memorose bench soak",
    }
    missing = []
    for parser in parsers:
        assert issubclass(parser.formatter_class, HelpFormatter), parser.prog  # type: ignore[arg-type]
        formatter = HelpFormatter(parser.prog)
        for action in parser._actions:
            if not action.option_strings or isinstance(
                action, argparse._HelpAction | argparse._VersionAction
            ):
                continue
            text = formatter._get_help_string(action)
            if not action.help or "default" not in text.lower():
                missing.append(f"{parser.prog} {'/'.join(action.option_strings)}")
        parser.format_help()  # the %-formatting of every help string works
    assert not missing, missing
