"""The container image: built by podman from a local Debian base, run non-root and read-only.

Podman is configured for this kind of machine through a private containers.conf and
storage.conf (runc, cgroupfs, ulimits below the host's hard limits, storage in a temp dir); the
base image is the session's debootstrap root imported as a tar, so the build needs no registry.
Behind a TLS-intercepting proxy pip inside the build needs the host's CA bundle: it is passed
as the build secret the Dockerfile documents.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import TOKEN, CollectorProcess
from tests.packaging.conftest import sealed_messages
from tests.packaging.tools import REPO, ensure_commands, run, tool
from tests.support import TlsFiles, eventually_sync

BASE = "localhost/tailseal-test-base:debian12"
IMAGE = "localhost/tailseal:test"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LINE = "Nov 21 22:00:00 pod-host sshd[9]: Accepted publickey for alice port 22 ssh2"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
BUILD_TIMEOUT = 600.0
SHIP_TIMEOUT = 60.0


def storage_driver() -> str:
    filesystems = Path("/proc/filesystems").read_text()
    return "overlay" if "\toverlay\n" in filesystems else "vfs"


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment that points podman at a private configuration and storage."""
    ensure_commands("podman", "runc")
    home = tmp_path_factory.mktemp("podman")
    (home / "containers.conf").write_text(CONTAINERS_CONF)
    (home / "storage.conf").write_text(
        f'[storage]\ndriver = "{storage_driver()}"\n'
        f'graphroot = "{home / "graph"}"\nrunroot = "{home / "run"}"\n'
    )
    env = {
        "CONTAINERS_CONF": str(home / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
    }
    yield env
    run(["podman", "system", "reset", "--force"], timeout=300, env=env, check=False)


@pytest.fixture(scope="session")
def image(podman_env: dict[str, str], debian_root: Path) -> str:
    """The repository's Dockerfile built on the debootstrap root as BASE."""
    with subprocess.Popen(
        [tool("tar"), "-C", str(debian_root), "-c", "."], stdout=subprocess.PIPE
    ) as tar:
        run(["podman", "import", "-", BASE], timeout=300, env=podman_env, stdin=tar.stdout)
    assert tar.returncode == 0
    secret = ["--secret", f"id=ca_bundle,src={HOST_CA_BUNDLE}"] if HOST_CA_BUNDLE.exists() else []
    run(
        [
            "podman",
            "build",
            "--format=docker",  # keeps HEALTHCHECK (OCI image configs have no such field)
            "--network=host",
            f"--build-arg=BASE={BASE}",
            *secret,
            "--tag",
            IMAGE,
            REPO,
        ],
        timeout=BUILD_TIMEOUT,
        env=podman_env,
    )
    return IMAGE


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_runs_non_root_read_only_ships_a_line_and_seals_on_stop(
    image: str,
    podman_env: dict[str, str],
    collector: CollectorProcess,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(tls_files.ca_file, ca)
    ca.chmod(0o644)
    config = tmp_path / "tailseal.toml"
    config.write_text(
        f"""
state_dir = "/var/lib/tailseal"
[sources.auth]
type = "file"
paths = ["/var/log/host/auth.log"]
[sinks.central]
type = "tailseal"
endpoint = "https://127.0.0.1:{collector.port}"
token = "{TOKEN}"
ca_file = "/etc/tailseal/ca.pem"
"""
    )
    config.chmod(0o644)
    auth_log = tmp_path / "auth.log"
    auth_log.write_text(LINE + "\n")
    shutil.chown(auth_log, "root", "adm")
    auth_log.chmod(0o640)  # as on a host: readable through the adm group only
    name = f"tailseal-test-{tmp_path.name}"
    run(
        [
            "podman",
            "run",
            "--detach",
            f"--name={name}",
            "--read-only",
            "--user=10001:10001",
            "--group-add=4",  # adm: Kubernetes supplementalGroups: [4]
            "--network=host",
            f"--volume={config}:/etc/tailseal/tailseal.toml:ro",
            f"--volume={ca}:/etc/tailseal/ca.pem:ro",
            f"--volume={auth_log}:/var/log/host/auth.log:ro",
            image,
        ],
        timeout=120,
        env=podman_env,
    )
    try:
        eventually_sync(
            lambda: LINE in [r.get("msg") for r in collector.records()],
            timeout=SHIP_TIMEOUT,
            what="the line from the container at the collector",
        )
        uid = run(["podman", "exec", name, "id", "-u"], timeout=60, env=podman_env).stdout
        assert uid.strip() == "10001"
        health = run(["podman", "healthcheck", "run", name], timeout=60, env=podman_env)
        assert health.returncode == 0

        run(["podman", "stop", "--time=40", name], timeout=120, env=podman_env)
        code = run(
            ["podman", "inspect", "--format={{.State.ExitCode}}", name],
            timeout=60,
            env=podman_env,
        ).stdout
    finally:
        logs = run(["podman", "logs", name], timeout=60, env=podman_env, check=False)
        run(["podman", "rm", "--force", name], timeout=120, env=podman_env, check=False)

    assert code.strip() == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
    state, shipped = sealed_messages(collector)
    assert (state, shipped) == ("sealed", [LINE])
