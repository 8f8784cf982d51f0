"""``memorose mcp``: an MCP server (docs/mcp.md) that gives agents in Claude Desktop, Cursor
and other MCP hosts a tenant's memory, over stdio or streamable HTTP.

It talks to a node, a shard or a gateway through the Python SDK, so it follows leaders and
shards like any other client. This module only registers the command and reads its
settings: the ``mcp`` package (the ``[mcp]`` extra) is imported when the command runs, so
importing ``memorose`` never needs it.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from memorose.cli_support import OperatorError, port_number

TRANSPORTS = ("stdio", "streamable-http")
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_STREAM = "mcp"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class McpSettings:
    """Where the server's memory lives and how MCP clients reach it."""

    urls: list[str]
    api_key: str | None = None
    tenant: str | None = None
    stream: str = DEFAULT_STREAM
    transport: str = "stdio"
    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/mcp"
    timeout: float = 30.0
    http_token: str | None = None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``memorose mcp``; flags default to the MEMOROSE_* environment (docs/mcp.md)."""
    cmd = sub.add_parser("mcp", help="MCP server for agents (stdio or streamable HTTP; docs/mcp.md)")
    cmd.add_argument(
        "--url",
        help=f"node, shard seeds (comma-separated) or gateway (default: $MEMOROSE_URL, else {DEFAULT_URL})",
    )
    cmd.add_argument("--api-key", help="API key (default: $MEMOROSE_API_KEY; prefer it: flags show in ps)")
    cmd.add_argument(
        "--tenant",
        help="tenant of tools and resources unless a call names one (default: $MEMOROSE_TENANT)",
    )
    cmd.add_argument(
        "--stream", help=f"stream of new memories (default: $MEMOROSE_STREAM, else {DEFAULT_STREAM})"
    )
    cmd.add_argument(
        "--transport",
        choices=TRANSPORTS,
        help="how clients connect (default: $MEMOROSE_MCP_TRANSPORT, else stdio)",
    )
    cmd.add_argument("--host", default="127.0.0.1", help="streamable HTTP: address to listen on")
    cmd.add_argument("--port", type=port_number, default=8765, help="streamable HTTP: port")
    cmd.add_argument("--path", default="/mcp", help="streamable HTTP: endpoint path")
    cmd.add_argument(
        "--http-token", help="streamable HTTP: bearer token clients must send (default: $MEMOROSE_MCP_TOKEN)"
    )
    cmd.add_argument("--timeout", type=float, default=30.0, help="seconds per Memorose request attempt")
    cmd.set_defaults(func=cmd_mcp)


def settings_from(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> McpSettings:
    """Flags win over the environment, so one config file can still be overridden per host."""
    url = args.url or env.get("MEMOROSE_URL") or DEFAULT_URL
    urls = [u.strip() for u in url.split(",") if u.strip()]
    transport = args.transport or env.get("MEMOROSE_MCP_TRANSPORT") or "stdio"
    if not urls:
        raise OperatorError("--url names no URL: pass a node's or the gateway's base URL")
    if transport not in TRANSPORTS:
        raise OperatorError(f"MEMOROSE_MCP_TRANSPORT={transport!r}: use one of {', '.join(TRANSPORTS)}")
    if args.timeout <= 0:
        raise OperatorError(f"--timeout {args.timeout}: use a number of seconds above 0")
    http_token = args.http_token or env.get("MEMOROSE_MCP_TOKEN") or None
    if transport == "streamable-http" and not http_token and args.host not in LOOPBACK:
        raise OperatorError(
            f"--host {args.host} without --http-token would let anyone who reaches it use the API key:"
            " set MEMOROSE_MCP_TOKEN (clients send it as a bearer token) or listen on 127.0.0.1"
        )
    return McpSettings(
        urls=urls,
        api_key=args.api_key or env.get("MEMOROSE_API_KEY") or None,
        tenant=args.tenant or env.get("MEMOROSE_TENANT") or None,
        stream=args.stream or env.get("MEMOROSE_STREAM") or DEFAULT_STREAM,
        transport=transport,
        host=args.host,
        port=args.port,
        path="/" + args.path.strip("/"),
        timeout=args.timeout,
        http_token=http_token,
    )


def cmd_mcp(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        from memorose.mcp import server
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("mcp"):
            raise
        raise OperatorError("the MCP server needs the mcp package: pip install 'memorose[mcp]'") from None
    # One INFO line per SDK request otherwise; stdout stays the protocol's alone (stdio).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    server.run(settings)
    return 0
