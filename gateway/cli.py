"""``memorose gateway``: run the gateway, or plan a ring change."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import load_gateway_settings, parse_shard_flag


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gw = sub.add_parser("gateway", help="run the sharding gateway")
    gw.add_argument("--config", help="TOML file with http, admin_key and [shards]")
    gw.add_argument("--http", help="HOST:PORT to listen on")
    gw.add_argument("--shard", action="append", default=[], help="NAME=URL1,URL2,URL3 (repeat)")
    gw.set_defaults(func=cmd_gateway)


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    shards = dict(parse_shard_flag(flag) for flag in args.shard) or None
    return load_gateway_settings(args.config, http=args.http, shards=shards)


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def serve() -> None:
        runner = web.AppRunner(build_gateway_app(settings), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        print(f"Memorose gateway listening on http://{settings.http}", flush=True)
        print(f"  shards: {json.dumps(settings.shards)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0
