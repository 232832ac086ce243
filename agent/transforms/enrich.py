"""Enrichment: who is speaking. Host, image and platform identity for the batch headers.

DESIGN.md: host identity and metadata travel in batch headers, not in every record, so the
cost is paid once per batch and the collector keeps them with the stream (``head.json``).
Built once at start-up, as ECS-shaped fields:

* ``name`` (host name), ``id`` (``/etc/machine-id``), ``boot.id``
  (``/proc/sys/kernel/random/boot_id``), ``os`` from ``/etc/os-release``, ``image`` from its
  ``IMAGE_ID``/``IMAGE_VERSION`` (set by image builders), and ``provenance``: the JSON file an
  image bake may write (``enrich.provenance_file``), e.g. the Packer build id and git commit.
* ``cloud``: instance identity from the metadata service of the platform the DMI data names
  (``agent/transforms/cloud.py``), with the termination watchers' endpoints and short timeout.
  A missing service costs one timeout; the answer is cached per boot in the state directory.
* ``kubernetes``: node, pod and namespace from the downward API environment variables.

Files that do not exist are simply left out: nothing here fails start-up. Pure reads apart from
the per-boot cache; called once by the supervisor.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from agent.config import AgentConfig
from agent.errors import StateError
from agent.statefile import read_json, write_json
from agent.transforms import cloud

log = logging.getLogger(__name__)

MACHINE_ID = Path("/etc/machine-id")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
CACHE = "host-identity.json"
# Downward API variables, as the manifests in packaging/kubernetes set them.
K8S_ENV = {
    "node": ("TAILSEAL_K8S_NODE_NAME", "NODE_NAME"),
    "pod": ("TAILSEAL_K8S_POD_NAME", "POD_NAME"),
    "namespace": ("TAILSEAL_K8S_NAMESPACE", "POD_NAMESPACE"),
}


async def host_info(
    config: AgentConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    host = local_facts(config.host_name, config.enrich.provenance_file)
    if config.enrich.cloud:
        identity = await _cloud_cached(config, str(host.get("boot", {}).get("id", "")))
        if identity:
            host["cloud"] = identity
    kube = kubernetes(env)
    if kube:
        host["kubernetes"] = kube
    return host


def local_facts(host_name: str, provenance_file: str) -> dict[str, Any]:
    host: dict[str, Any] = {"name": host_name or socket.gethostname()}
    if machine_id := _read(MACHINE_ID):
        host["id"] = machine_id
    if boot_id := _read(BOOT_ID):
        host["boot"] = {"id": boot_id}
    release = os_release()
    if release:
        host["os"] = {
            k: v
            for k, v in (
                ("name", release.get("NAME")),
                ("family", release.get("ID")),
                ("version", release.get("VERSION_ID")),
                ("full", release.get("PRETTY_NAME")),
            )
            if v
        }
        image = {
            k: release[key]
            for k, key in (("id", "IMAGE_ID"), ("version", "IMAGE_VERSION"))
            if key in release
        }
        if image:
            host["image"] = image
    if provenance_file and (provenance := _provenance(Path(provenance_file))):
        host["provenance"] = provenance
    return host


def os_release(paths: tuple[Path, ...] = OS_RELEASE) -> dict[str, str]:
    """``/etc/os-release`` as a dict (shell-style KEY=value, quotes removed)."""
    for path in paths:
        text = _read(path, strip=False)
        if not text:
            continue
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.lstrip().startswith("#"):
                values[key.strip()] = value.strip().strip("'\"")
        return values
    return {}


def kubernetes(env: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for field, names in K8S_ENV.items():
        value = next((env[n] for n in names if env.get(n)), "")
        if value:
            found[field] = value
    return found


def _provenance(path: Path) -> dict[str, Any] | None:
    raw = _read(path, strip=False)
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("provenance file %s is not JSON; left out", path)
        return None
    return value if isinstance(value, dict) else None


async def _cloud_cached(config: AgentConfig, boot_id: str) -> dict[str, Any]:
    """Cloud identity, from a cache written earlier in this boot when there is one."""
    path = Path(config.state_dir) / CACHE
    try:
        cached = read_json(path)
    except StateError:
        cached = None
    if isinstance(cached, dict) and boot_id and cached.get("boot_id") == boot_id:
        identity = cached.get("cloud")
        return identity if isinstance(identity, dict) else {}
    identity = await cloud.identity(config.termination)
    if boot_id:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"boot_id": boot_id, "cloud": identity})
        except OSError as exc:
            log.warning("cannot cache host identity in %s: %s", path, exc)
    return identity


def _read(path: Path, *, strip: bool = True) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text.strip() if strip else text
