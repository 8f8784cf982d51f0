"""docker-compose.yml and deploy/Dockerfile, checked statically (no container engine runs in
CI): the compose model, interpolated from .env.example, is valid against the Compose
Specification schema and has the structure an operator relies on; the image is
hadolint-clean, pinned, multi-stage, non-root and health-checked on /readyz."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODES = [f"s{s}n{i}" for s in (1, 2) for i in (1, 2, 3)]
_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def dotenv(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if ln and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (enough for our file)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name, "")
        if op and op.endswith("?") and not value:
            raise AssertionError(f"{name} is required: {arg}")
        return value or (arg if op and op.endswith("-") else "")

    return _VAR.sub(one, text)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return dotenv(ROOT / ".env.example")


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), env))  # type: ignore[no-any-return]


def flags(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, arg in enumerate(command) if arg == name]


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests/deploy/compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({"services": {"x": {"restart": 3}}})


def test_compose_services_health_restart_volumes_and_secrets(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    services = compose["services"]
    assert set(services) == {*NODES, "gateway", "prometheus", "grafana"}
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: healthcheck must be exec form"
        if name in NODES or name == "gateway":
            assert any("/readyz" in part for part in test), name
    for name in NODES:
        svc = services[name]
        assert svc["environment"]["MEMOROSE_ADMIN_KEY"] == env["MEMOROSE_ADMIN_KEY"]
        assert svc["environment"]["MEMOROSE_RAFT_PASSWORD"] == env["MEMOROSE_RAFT_PASSWORD"]
        [volume] = svc["volumes"]
        assert volume == f"{name}-data:/data" and f"{name}-data" in compose["volumes"]
        assert "depends_on" not in svc  # peers start together; 2 of 3 elect a leader
    # One node that never gets ready must not hold back the gateway or the monitoring.
    assert services["gateway"]["depends_on"] == {n: {"condition": "service_started"} for n in NODES}
    assert "depends_on" not in services["prometheus"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    with pytest.raises(AssertionError, match="MEMOROSE_ADMIN_KEY"):
        interpolate((ROOT / "docker-compose.yml").read_text(), {})


def test_advertised_urls_work_from_the_host_and_the_gateway(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    """Each node advertises the host port it is published on; peers name each other by
    those URLs and Raft addresses; the gateway reaches every advertised URL via an alias."""
    services, host = compose["services"], env["MEMOROSE_PUBLIC_HOST"]
    advertised: dict[str, str] = {}
    for name in NODES:
        svc = services[name]
        [published] = svc["ports"]
        host_port, container_port = published.split(":")
        assert container_port == "8080" and flags(svc["command"], "--http") == ["0.0.0.0:8080"]
        assert flags(svc["command"], "--http-advertise") == [f"http://{host}:{host_port}"]
        advertised[name] = f"http://{host}:{host_port}"
        assert flags(svc["command"], "--raft") == [f"{name}:8081"]  # Raft is not published
    for name in NODES:
        shard = name[:2]
        peers = dict(p.split("=", 1) for p in flags(services[name]["command"], "--peer"))
        others = [n for n in NODES if n.startswith(shard) and n != name]
        assert peers == {f"{n}:8081": advertised[n] for n in others}
    gateway = tomllib.loads((ROOT / "deploy/compose/gateway.toml").read_text())
    assert gateway["shards"] == {
        s: [f"http://{n}:8080" for n in NODES if n.startswith(s)] for s in ("s1", "s2")
    }
    assert "url_aliases" not in gateway  # from MEMOROSE_URL_ALIASES, built from the public host
    aliases = {advertised[n]: f"http://{n}:8080" for n in NODES}
    for name in [*NODES, "gateway"]:
        assert json.loads(services[name]["environment"]["MEMOROSE_URL_ALIASES"]) == aliases, name


def test_url_aliases_follow_the_public_host(env: dict[str, str]) -> None:
    """A shared host's DNS name in .env changes every alias with the advertised URLs."""
    text = interpolate(
        (ROOT / "docker-compose.yml").read_text(), {**env, "MEMOROSE_PUBLIC_HOST": "mem.example"}
    )
    gateway = yaml.safe_load(text)["services"]["gateway"]
    aliases = json.loads(gateway["environment"]["MEMOROSE_URL_ALIASES"])
    assert aliases["http://mem.example:18023"] == "http://s2n3:8080" and len(aliases) == len(NODES)


def test_prometheus_scrapes_every_node_with_its_shard() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [nodes] = [j for j in config["scrape_configs"] if j["job_name"] == "memorose-nodes"]
    scraped = {t: sc["labels"]["shard"] for sc in nodes["static_configs"] for t in sc["targets"]}
    assert scraped == {f"{n}:8080": n[:2] for n in NODES}


def test_dockerfile_is_hadolint_clean_pinned_multistage_and_non_root() -> None:
    dockerfile = ROOT / "deploy/Dockerfile"
    result = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    unpinned = [image for image in base_images(text) if not re.search(r"@sha256:[0-9a-f]{64}$", image)]
    assert not unpinned, f"every FROM must be pinned by digest: {unpinned}"
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r'^\s+CMD \["python", .*/readyz', text, re.M)
    assert "dashboard" in text and "requirements.lock" in text


def base_images(dockerfile: str) -> list[str]:
    """The image of every FROM, with ``${ARG}`` replaced by its default; a FROM naming an
    earlier stage is not an image and is left out."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    stages: set[str] = set()
    images = []
    for image, stage in re.findall(r"^FROM (?:--platform=\S+ )?(\S+)(?: AS (\S+))?", dockerfile, re.M | re.I):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image not in stages:
            images.append(image)
        stages.add(stage)
    return images


def test_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = (ROOT / "deploy/requirements.lock").read_text().splitlines()
    pins = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    pins = {canonicalize_name(k): v for k, v in pins.items()}
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in deploy/requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {spec}"


def test_yaml_is_lint_clean() -> None:
    result = subprocess.run(
        [str(BIN / "yamllint"), "-c", ".yamllint.yml", "docker-compose.yml", "deploy", ".yamllint.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def in_ci() -> bool:
    """CI=1 (.ci/run exports it; CI services set CI=true): a missing tool is a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if in_ci():
            raise AssertionError("promtool is missing in CI: `make test` installs it (Debian's prometheus)")
        pytest.skip("promtool not installed (make test installs it when run as root)")
    rules = ROOT / "deploy/prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run([promtool, *args], cwd=rules, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
