"""``memorose gateway``: run the gateway, or plan a ring change."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from aiohttp import web

from gateway.app import build_gateway_app
from gateway.config import GatewaySettings, load_gateway_settings, parse_shard_flag
from gateway.limits import guarded_site
from memorose.cli_support import OperatorError, check_port_free
from memorose.config import RuntimeSettings
from memorose.errors import ConfigError
from memorose.runtime import prepare_heap


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gw = sub.add_parser("gateway", help="run the sharding gateway")
    gw.add_argument("--config", help="TOML file with http, admin_key, max_body_bytes and [shards]")
    gw.add_argument("--http", help="HOST:PORT to listen on (default: 127.0.0.1:8000, or http in --config)")
    gw.add_argument(
        "--shard",
        action="append",
        default=[],
        help="NAME=URL1,URL2,URL3, one per shard (repeat; or [shards])",
    )
    gw.set_defaults(func=cmd_gateway)
    gw_sub = gw.add_subparsers(dest="gateway_command", metavar="ACTION")
    reb = gw_sub.add_parser(
        "rebalance", help="report (and with --apply, move) the tenants a ring change moves (docs/gateway.md)"
    )
    reb.add_argument("--from-config", required=True, help="gateway TOML with the current [shards]")
    reb.add_argument("--config", required=True, help="gateway TOML with the new [shards]")
    reb.add_argument("--apply", action="store_true", help="move the tenants (default: only report)")
    reb.set_defaults(func=cmd_rebalance)


def cmd_rebalance(args: argparse.Namespace) -> int:
    from gateway import rebalance

    old = load_gateway_settings(args.from_config)
    new = load_gateway_settings(args.config)
    if not new.admin_key:
        raise ConfigError("the admin key is required (admin_key in the config or MEMOROSE_ADMIN_KEY)")
    planned = rebalance.run(rebalance.plan(old.shards, new.shards, new.admin_key, new.vnodes))
    print(
        json.dumps({"moves": {t: {"from": a, "to": b} for t, (a, b) in sorted(planned.items())}}), flush=True
    )
    if not args.apply:
        return 0

    def progress(report: rebalance.MoveReport) -> None:
        print(json.dumps({"moved": report.__dict__}), flush=True)

    rebalance.run(
        rebalance.rebalance(old.shards, new.shards, new.admin_key, vnodes=new.vnodes, progress=progress)
    )
    print("done: now restart (or reconfigure) every gateway with the new config", file=sys.stderr, flush=True)
    return 0


PORT_FIX = "stop whatever listens there or pass another --http HOST:PORT"


def _settings(args: argparse.Namespace) -> GatewaySettings:
    shards = dict(parse_shard_flag(flag) for flag in args.shard) or None
    return load_gateway_settings(args.config, http=args.http, shards=shards)


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    check_port_free(settings.host, settings.port, "gateway HTTP address", PORT_FIX)

    async def serve() -> None:
        runner = web.AppRunner(
            build_gateway_app(settings),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=settings.limits.keepalive_timeout_secs,
        )
        await runner.setup()
        try:
            await guarded_site(runner, settings.host, settings.port, settings.limits).start()
        except OSError as exc:  # taken between the check and now
            await runner.cleanup()
            raise OperatorError(f"gateway HTTP address {settings.http}: {exc.strerror}: {PORT_FIX}") from None
        runtime = RuntimeSettings()  # memorose/runtime.py: short GC pauses
        prepare_heap(runtime.gc_freeze, runtime.gc_gen0_threshold)
        print(f"Memorose gateway listening on http://{settings.http}", flush=True)
        print(f"  shards: {json.dumps(settings.shards)}", flush=True)
        print(f"  dashboard: http://{settings.http}/dashboard  (sign in with the admin key)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0
