"""Host, image, cloud and Kubernetes identity for batch headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, EnrichConfig, TerminationConfig
from agent.transforms import cloud, enrich
from tests.termination.metadata import MetadataServer

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
# a comment
IMAGE_ID=acme-base
IMAGE_VERSION='2026.11.3'
"""


def test_os_release_is_parsed_with_image_identity(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text(OS_RELEASE)
    values = enrich.os_release((tmp_path / "missing", path))
    assert values["ID"] == "debian"
    assert values["IMAGE_ID"] == "acme-base"
    assert values["IMAGE_VERSION"] == "2026.11.3"
    assert "# a comment" not in values


def test_local_facts_carry_name_boot_and_provenance(tmp_path: Path) -> None:
    provenance = tmp_path / "provenance.json"
    provenance.write_text('{"builder": "packer", "build_id": "b-17", "commit": "abc123"}')
    host = enrich.local_facts("web-1", str(provenance))
    assert host["name"] == "web-1"
    assert len(host["boot"]["id"]) == 36  # /proc/sys/kernel/random/boot_id is a UUID
    assert host["provenance"] == {"builder": "packer", "build_id": "b-17", "commit": "abc123"}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_unusable_provenance_file_is_left_out(tmp_path: Path, content: str) -> None:
    provenance = tmp_path / "provenance.json"
    provenance.write_text(content)
    assert "provenance" not in enrich.local_facts("h", str(provenance))
    assert "provenance" not in enrich.local_facts("h", str(tmp_path / "absent.json"))


def test_kubernetes_identity_comes_from_the_downward_api_env() -> None:
    env = {"NODE_NAME": "node-a", "POD_NAME": "tailseal-x1", "TAILSEAL_K8S_NAMESPACE": "logging"}
    assert enrich.kubernetes(env) == {
        "node": "node-a",
        "pod": "tailseal-x1",
        "namespace": "logging",
    }
    assert enrich.kubernetes({}) == {}


def forced(platform: str, url: str) -> TerminationConfig:
    settings: dict[str, Any] = {"ec2": "off", "gcp": "off", "azure": "off", platform: "on"}
    return TerminationConfig(
        **settings, ec2_endpoint=url, gcp_endpoint=url, azure_endpoint=url, timeout=1.0
    )


async def test_ec2_identity_document_through_imdsv2() -> None:
    with MetadataServer() as metadata:
        found = await cloud.identity(forced("ec2", metadata.url))
    assert found == {
        "provider": "aws",
        "instance": {"id": "i-0abc123"},
        "image": {"id": "ami-0def456"},
        "machine": {"type": "m7g.large"},
        "region": "eu-west-1",
        "availability_zone": "eu-west-1b",
        "account": {"id": "123456789012"},
    }


async def test_gcp_and_azure_identity() -> None:
    with MetadataServer() as metadata:
        gcp = await cloud.identity(forced("gcp", metadata.url))
        azure = await cloud.identity(forced("azure", metadata.url))
    assert gcp["instance"] == {"id": "4242", "name": "web-1"}
    assert gcp["region"] == "europe-west4"
    assert gcp["project"] == {"id": "acme-prod"}
    assert azure["instance"] == {"id": "9f3c", "name": "vm1"}
    assert azure["region"] == "westeurope"


async def test_unreachable_metadata_service_gives_no_identity_not_an_error() -> None:
    assert await cloud.identity(forced("ec2", "http://127.0.0.1:9")) == {}


async def test_cloud_identity_is_cached_for_the_boot(tmp_path: Path) -> None:
    with MetadataServer() as metadata:
        config = AgentConfig(
            state_dir=str(tmp_path),
            host_name="web-1",
            termination=forced("ec2", metadata.url),
            enrich=EnrichConfig(provenance_file=""),
        )
        first = await enrich.host_info(config, environ={})
    # The service is gone now; the same boot reuses what was learned.
    again = await enrich.host_info(config, environ={"POD_NAME": "p"})
    assert first["cloud"]["instance"] == {"id": "i-0abc123"}
    assert again["cloud"] == first["cloud"]
    assert again["kubernetes"] == {"pod": "p"}
