"""Cloud instance identity (ECS ``cloud.*``) from the platform's metadata service.

EC2 through IMDSv2 (token, then ``dynamic/instance-identity/document``), GCP through
``computeMetadata/v1`` with ``Metadata-Flavor: Google``, Azure through the Instance Metadata
Service with ``Metadata: true``. Only the platform the DMI data names is asked (or the ones the
termination config forces "on"); every request has the short termination timeout, and any
failure yields an empty result: identity is nice to have, never a reason not to start.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

from agent.config import TerminationConfig
from agent.termination import watchers

log = logging.getLogger(__name__)


async def identity(config: TerminationConfig) -> dict[str, Any]:
    platforms = {w.kind for w in watchers.build(config)}
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if "ec2" in platforms:
                return await _ec2(session, config.ec2_endpoint.rstrip("/"))
            if "gcp" in platforms:
                return await _gcp(session, config.gcp_endpoint.rstrip("/"))
            if "azure" in platforms:
                return await _azure(session, config.azure_endpoint.rstrip("/"))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
        log.info("cloud identity unavailable: %r", exc)
    return {}


async def _ec2(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    async with session.put(base + "/latest/api/token", headers=headers) as resp:
        resp.raise_for_status()
        token = (await resp.text()).strip()
    url = base + "/latest/dynamic/instance-identity/document"
    async with session.get(url, headers={"X-aws-ec2-metadata-token": token}) as resp:
        resp.raise_for_status()
        doc = orjson.loads(await resp.read())
    return _present(
        provider="aws",
        instance={"id": doc.get("instanceId")},
        image={"id": doc.get("imageId")},
        machine={"type": doc.get("instanceType")},
        region=doc.get("region"),
        availability_zone=doc.get("availabilityZone"),
        account={"id": doc.get("accountId")},
    )


async def _gcp(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    headers = {"Metadata-Flavor": "Google"}
    url = base + "/computeMetadata/v1/?recursive=true"
    async with session.get(url, headers=headers) as resp:
        resp.raise_for_status()
        doc = orjson.loads(await resp.read())
    instance, project = doc.get("instance", {}), doc.get("project", {})
    zone = str(instance.get("zone", "")).rsplit("/", 1)[-1]
    return _present(
        provider="gcp",
        instance={"id": str(instance.get("id", "")), "name": instance.get("name")},
        image={"id": str(instance.get("image", "")).rsplit("/", 1)[-1]},
        machine={"type": str(instance.get("machineType", "")).rsplit("/", 1)[-1]},
        availability_zone=zone,
        region=zone.rsplit("-", 1)[0] if zone else None,
        project={"id": project.get("projectId")},
    )


async def _azure(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    url = base + "/metadata/instance?api-version=2021-02-01"
    async with session.get(url, headers={"Metadata": "true"}) as resp:
        resp.raise_for_status()
        doc = orjson.loads(await resp.read())
    compute = doc.get("compute", {})
    image = compute.get("storageProfile", {}).get("imageReference", {})
    return _present(
        provider="azure",
        instance={"id": compute.get("vmId"), "name": compute.get("name")},
        image={"id": image.get("id") or image.get("sku")},
        machine={"type": compute.get("vmSize")},
        region=compute.get("location"),
        availability_zone=compute.get("zone"),
        account={"id": compute.get("subscriptionId")},
    )


def _present(**fields: Any) -> dict[str, Any]:
    """Drop empty values (and sub-objects left empty) so the header carries only what is known."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        kept = {k: v for k, v in value.items() if v} if isinstance(value, dict) else value
        if kept:
            out[key] = kept
    return out
