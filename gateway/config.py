"""Gateway settings: where to listen and which shards (Raft groups) exist.

TOML::

    http = "127.0.0.1:8000"
    admin_key = "..."          # or MEMOROSE_ADMIN_KEY; the same admin key as the nodes
    max_body_bytes = 4194304   # larger request bodies get 413 (the node's default limit)
    [shards]
    s1 = ["http://10.0.0.11:8080", "http://10.0.0.12:8080", "http://10.0.0.13:8080"]
    s2 = ["http://10.0.1.11:8080", "http://10.0.1.12:8080", "http://10.0.1.13:8080"]
    [url_aliases]              # or JSON in MEMOROSE_URL_ALIASES, which wins
    "http://203.0.113.5:18011" = "http://10.0.0.11:8080"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from memorose.config import LimitSettings, problem, read_toml, validate_url_aliases
from memorose.errors import ConfigError


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: str = "127.0.0.1:8000"
    admin_key: str | None = None
    vnodes: int = Field(160, ge=1, le=10_000)
    request_timeout_secs: float = Field(30.0, gt=0)
    #: Larger bodies are refused with 413 before they are read whole; the node's default.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    #: Validated even when absent: a gateway without shards can route nothing.
    shards: dict[str, list[str]] = Field(default_factory=dict, validate_default=True)
    #: Advertised node URL -> URL the gateway uses for that node, for redirects that name
    #: a URL only reachable from outside the gateway's network (docs/operations.md).
    url_aliases: dict[str, str] = Field(default_factory=dict)
    #: Request rate, ingest volume, concurrency, connections and read deadlines, as on a
    #: node (``[limits]``; quotas and the top_k/batch sizes are the nodes' to enforce).
    limits: LimitSettings = Field(default_factory=LimitSettings)

    @field_validator("http")
    @classmethod
    def _http(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} must be HOST:PORT with a port from 1 to 65535")
        return value

    @field_validator("url_aliases")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_url_aliases(value)

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value:
            raise ValueError(
                "at least one shard is required: give --shard NAME=URL1,URL2,... or [shards] in --config"
            )
        for name, urls in value.items():
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"shard name {name!r} must be alphanumeric")
            if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
                raise ValueError(f"shard {name!r} needs one or more http(s) URLs")
        return {name: [u.rstrip("/") for u in urls] for name, urls in value.items()}

    @property
    def host(self) -> str:
        return self.http.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.http.rpartition(":")[2])


def parse_shard_flag(flag: str) -> tuple[str, list[str]]:
    name, sep, urls = flag.partition("=")
    if not sep or not urls:
        raise ConfigError(f"--shard {flag!r} must look like NAME=URL1,URL2,URL3")
    return name, [u for u in urls.split(",") if u]


def _aliases_from_env(raw: str) -> Any:
    """MEMOROSE_URL_ALIASES is JSON (as for a node), so compose can build it from the public
    host setting instead of a TOML file with a hard-coded host."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"MEMOROSE_URL_ALIASES is not a JSON object: {exc}") from exc


def load_gateway_settings(config_file: str | None, **overrides: Any) -> GatewaySettings:
    import os

    data: dict[str, Any] = read_toml(Path(config_file)) if config_file else {}
    if os.environ.get("MEMOROSE_ADMIN_KEY"):
        data["admin_key"] = os.environ["MEMOROSE_ADMIN_KEY"]
    if os.environ.get("MEMOROSE_URL_ALIASES"):
        data["url_aliases"] = _aliases_from_env(os.environ["MEMOROSE_URL_ALIASES"])
    data.update({k: v for k, v in overrides.items() if v})
    try:
        return GatewaySettings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'gateway'}: {problem(e['msg'])}" for e in exc.errors()
        )
        raise ConfigError(
            f"invalid gateway configuration: {problems} (fix the flags or the config file)"
        ) from exc
