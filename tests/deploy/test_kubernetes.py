"""The Kubernetes manifests (kustomize, deploy/k8s), rendered with the kubectl that the
dev extras install and validated with kubernetes-validate against the API schemas; then
checked for what keeps a shard alive: stable peer names, Parallel start, at most one node
of a shard disrupted, probes, limits, non-root. The pods' start script is run for real and
its arguments are fed to the node's own CLI and settings validation."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from memorose.cli import build_parser
from memorose.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OVERLAYS = ("dev", "production")


def render(overlay: str) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """overlay -> its manifests, each overlay validated by kubernetes-validate --strict."""
    out = {}
    for overlay in OVERLAYS:
        text = render(overlay)
        path = tmp_path_factory.mktemp("k8s") / f"{overlay}.yaml"
        path.write_text(text)
        check = subprocess.run(
            [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, f"{overlay}: {check.stdout}{check.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(text) if d]
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_shard_is_a_statefulset_with_stable_peers_and_a_budget(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    sets, services, budgets = (
        by_kind(docs, "StatefulSet"),
        by_kind(docs, "Service"),
        by_kind(docs, "PodDisruptionBudget"),
    )
    assert set(sets) == {"memorose-s1", "memorose-s2"}
    for name, sts in sets.items():
        spec, shard = sts["spec"], name.removeprefix("memorose-")
        assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
        headless = services[spec["serviceName"]]["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
        pods = spec["template"]["metadata"]["labels"]
        assert pods["memorose.io/shard"] == shard and headless["selector"].items() <= pods.items()
        assert budgets[name]["spec"]["maxUnavailable"] == 1
        assert budgets[name]["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
        [claim] = spec["volumeClaimTemplates"]
        [container] = spec["template"]["spec"]["containers"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert claim["metadata"]["name"] == "data"
        env = {e["name"]: e for e in container["env"]}
        assert env["REPLICAS"]["value"] == str(spec["replicas"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"requests", "limits"} <= set(container["resources"])
        assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        secret_refs = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        if overlay == "dev":  # production expects the operator to create the secret
            assert secret_refs <= set(by_kind(docs, "Secret"))


def test_gateway_deployment_service_and_monitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["dev"]
    deployment = by_kind(docs, "Deployment")["memorose-gateway"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert by_kind(docs, "Service")["memorose-gateway"]["spec"]["ports"][0]["port"] == 8080
    [config] = by_kind(docs, "ConfigMap").values()
    assert (
        deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        == config["metadata"]["name"]
    )
    shards = tomllib.loads(config["data"]["gateway.toml"])["shards"]
    for shard, urls in shards.items():
        sts = by_kind(docs, "StatefulSet")[f"memorose-{shard}"]
        assert urls == [
            f"http://memorose-{shard}-{i}.memorose-{shard}:8080" for i in range(sts["spec"]["replicas"])
        ]
    [monitor] = by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_memorose_io_shard"],
        "targetLabel": "shard",
    } in endpoint["relabelings"]


def test_pod_start_script_gives_the_node_valid_peers(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Run the StatefulSet's shell script with a stand-in ``memorose`` that prints its
    arguments, then parse them with the real CLI and settings."""
    sts = by_kind(rendered["dev"], "StatefulSet")["memorose-s1"]
    [container] = sts["spec"]["template"]["spec"]["containers"]
    fake = tmp_path / "memorose"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "POD_NAME": "memorose-s1-1",
        "POD_NAMESPACE": "memorose-dev",
        "POD_IP": "10.1.2.3",
        "REPLICAS": "3",
    }
    result = subprocess.run(
        [*container["command"], *container["args"]], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    args = build_parser().parse_args(argv)
    settings = load_settings(
        None,
        node_id=args.node_id,
        data_dir=str(tmp_path / "data"),
        http=args.http,
        raft=args.raft,
        raft_advertise=args.raft_advertise,
        http_advertise=args.http_advertise,
        peers=args.peer,
        raft_password="x",
    )
    domain = "memorose-s1.memorose-dev.svc.cluster.local"
    assert settings.raft_address == f"memorose-s1-1.{domain}:8081" and settings.raft == "10.1.2.3:8081"
    assert settings.public_url == f"http://memorose-s1-1.{domain}:8080"
    assert settings.peer_map() == {
        f"memorose-s1-{i}.{domain}:8081": f"http://memorose-s1-{i}.{domain}:8080" for i in (0, 2)
    }
