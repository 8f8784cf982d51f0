"""``memorose mcp`` settings (flags over MEMOROSE_* environment) and the lazy import of the
``mcp`` package: importing the library or building the CLI must not need it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from memorose.cli import build_parser
from memorose.cli_support import OperatorError
from memorose.mcp import McpSettings, settings_from


def parse(*argv: str, env: dict[str, str] | None = None) -> McpSettings:
    return settings_from(build_parser().parse_args(["mcp", *argv]), env or {})


def test_defaults() -> None:
    settings = parse()
    assert settings.urls == ["http://127.0.0.1:8080"] and settings.transport == "stdio"
    assert settings.tenant is None and settings.api_key is None and settings.stream == "mcp"


def test_environment_then_flags() -> None:
    env = {
        "MEMOROSE_URL": "http://a:1, http://b:2",
        "MEMOROSE_API_KEY": "k_env",
        "MEMOROSE_TENANT": "t_env",
        "MEMOROSE_STREAM": "s_env",
        "MEMOROSE_MCP_TRANSPORT": "streamable-http",
    }
    settings = parse(env=env)
    assert settings.urls == ["http://a:1", "http://b:2"] and settings.api_key == "k_env"
    assert (settings.tenant, settings.stream, settings.transport) == ("t_env", "s_env", "streamable-http")
    flagged = parse("--url", "http://c:3", "--tenant", "t_flag", "--transport", "stdio", env=env)
    assert flagged.urls == ["http://c:3"] and flagged.tenant == "t_flag" and flagged.transport == "stdio"


def test_http_off_loopback_needs_a_token() -> None:
    with pytest.raises(OperatorError, match="MEMOROSE_MCP_TOKEN"):
        parse("--transport", "streamable-http", "--host", "0.0.0.0")
    settings = parse("--transport", "streamable-http", "--host", "0.0.0.0", env={"MEMOROSE_MCP_TOKEN": "x"})
    assert settings.http_token == "x"


def test_bad_values_are_operator_errors() -> None:
    with pytest.raises(OperatorError):
        parse(env={"MEMOROSE_MCP_TRANSPORT": "carrier-pigeon"})
    with pytest.raises(OperatorError):
        parse("--url", " , ")


def test_importing_memorose_does_not_import_mcp() -> None:
    code = (
        "import sys, memorose, memorose.client, memorose.mcp, memorose.cli\n"
        "memorose.cli.build_parser()\n"
        "loaded = sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
