"""packaging/kubernetes: schema-valid manifests that keep the buffer and drain before the kill."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import AgentConfig, parse_agent_config
from tests.packaging.tools import REPO, run, venv_tool

MANIFESTS = sorted((REPO / "packaging" / "kubernetes").glob("*.yaml"))
DRAIN = ["/opt/tailseal/bin/tailseal", "drain", "-c", "/etc/tailseal/tailseal.toml"]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def workload(path: Path, kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents(path) if doc["kind"] == kind]
    return dict(found)


def agent_container(pod: dict[str, Any]) -> dict[str, Any]:
    candidates = [*pod.get("initContainers", []), *pod["containers"]]
    (container,) = [c for c in candidates if c["name"] == "tailseal"]
    return dict(container)


def test_manifests_pass_kubernetes_validate_strict() -> None:
    assert MANIFESTS
    result = run([venv_tool("kubernetes-validate"), "--strict", *MANIFESTS], timeout=120)

    assert "passed" in result.stdout + result.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_configmap_configs_are_valid_agent_configs(path: Path) -> None:
    configs = [
        doc["data"]["tailseal.toml"] for doc in documents(path) if doc["kind"] == "ConfigMap"
    ]

    assert configs
    for text in configs:
        config = parse_agent_config(tomllib.loads(text), environ={})
        assert config.control.listen == "127.0.0.1:7879"  # what the probes call


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_agent_environment_is_accepted_by_the_config_loader(path: Path) -> None:
    # TAILSEAL_* variables are config overrides: any that names no key stops the agent (78).
    (config,) = [d["data"]["tailseal.toml"] for d in documents(path) if d["kind"] == "ConfigMap"]
    kind = "DaemonSet" if path.name == "daemonset.yaml" else "Deployment"
    container = agent_container(workload(path, kind)["spec"]["template"]["spec"])
    environ = {env["name"]: "node-1" for env in container.get("env", [])}

    parse_agent_config(tomllib.loads(config), environ=environ)
    assert {"NODE_NAME", "POD_NAME", "POD_NAMESPACE"} <= environ.keys()  # enrich reads these


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_pods_drain_on_prestop_within_a_grace_period_above_the_drain_budget(path: Path) -> None:
    kind = "DaemonSet" if path.name == "daemonset.yaml" else "Deployment"
    pod = workload(path, kind)["spec"]["template"]["spec"]
    container = agent_container(pod)

    assert pod["terminationGracePeriodSeconds"] > AgentConfig().shutdown.timeout + 5
    assert container["lifecycle"]["preStop"]["exec"]["command"] == DRAIN
    assert "livenessProbe" in container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_daemonset_reads_host_logs_read_only_and_keeps_its_buffer_on_the_node() -> None:
    daemonset = workload(REPO / "packaging/kubernetes/daemonset.yaml", "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in agent_container(pod)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    assert mounts["/var/log"]["readOnly"] is True
    assert volumes[mounts["/var/log"]["name"]]["hostPath"]["path"] == "/var/log"
    state = volumes[mounts["/var/lib/tailseal"]["name"]]
    assert state["hostPath"]["path"] == "/var/lib/tailseal"
    assert "readinessProbe" in agent_container(pod)
    assert {"operator": "Exists"} in pod["tolerations"]
    assert agent_container(pod)["resources"]["limits"]["memory"]
    # Two agents must never share the node's buffer: the old pod goes before the new one starts.
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0


def test_sidecar_is_a_native_sidecar_stopped_after_the_app() -> None:
    pod = workload(REPO / "packaging/kubernetes/sidecar.yaml", "Deployment")["spec"]["template"]

    assert agent_container(pod["spec"])["restartPolicy"] == "Always"
