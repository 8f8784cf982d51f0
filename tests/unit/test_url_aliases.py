"""url_aliases from MEMOROSE_URL_ALIASES (JSON), for the gateway and for a node's dashboard:
in compose, peers advertise host URLs that only work from the host, so code inside the
network opens them through these aliases."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.config import load_gateway_settings
from memorose.config import load_settings
from memorose.errors import ConfigError
from node.routes.dashboard import _config

ALIASES = {"http://mem.example:18012/": "http://s1n2:8080", "http://mem.example:18013": "http://s1n3:8080"}


def test_gateway_takes_aliases_from_the_environment_over_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[shards]\ns1 = ["http://s1n1:8080"]\n[url_aliases]\n"http://a:1" = "http://b:2"\n')
    monkeypatch.setenv("MEMOROSE_URL_ALIASES", json.dumps(ALIASES))
    settings = load_gateway_settings(str(config))
    assert settings.url_aliases == {
        "http://mem.example:18012": "http://s1n2:8080",
        "http://mem.example:18013": "http://s1n3:8080",
    }
    monkeypatch.setenv("MEMOROSE_URL_ALIASES", "{not json")
    with pytest.raises(ConfigError, match="MEMOROSE_URL_ALIASES"):
        load_gateway_settings(str(config))


def test_node_dashboard_reads_peers_through_their_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOROSE_URL_ALIASES", json.dumps(ALIASES))
    settings = load_settings(
        node_id="s1n1",
        http="0.0.0.0:8080",
        raft="s1n1:8081",
        raft_password="pw",
        peers=["s1n2:8081=http://mem.example:18012", "s1n3:8081=http://elsewhere:9000/"],
    )
    targets = _config(SimpleNamespace(settings=settings)).metrics_targets()  # type: ignore[arg-type]
    assert targets["peer s1n2:8081"] == "http://s1n2:8080"
    assert targets["peer s1n3:8081"] == "http://elsewhere:9000"  # no alias: the advertised URL


def test_a_node_rejects_aliases_that_are_not_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMOROSE_URL_ALIASES", json.dumps({"s1n2:8080": "http://s1n2:8080"}))
    with pytest.raises(ConfigError, match="url_aliases"):
        load_settings()
