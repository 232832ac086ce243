"""Session fixtures for the packaging tests: one Debian 12 root, one build of the packages.

Both are expensive (debootstrap ~70 s, the package build ~25 s) and never modified in place:
a test that installs into the root works on a copy, the container image is imported from a tar
of it. ``TS_PACKAGING_DEBIAN_ROOT`` may name an existing debootstrap root (made with the same
command) to skip the debootstrap while developing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import CollectorProcess
from tests.packaging.tools import REPO, VENV_BIN, ensure_commands, ensure_debian_packages, run

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# systemd to boot it, rsyslog for a real root:adm 0640 auth.log, python3 for the venv.
DEBIAN_INCLUDE = "systemd,systemd-sysv,dbus,python3,python3-venv,rsyslog,ca-certificates"
DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Packages:
    deb: Path
    rpm: Path


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A pristine Debian 12 (minbase + systemd, rsyslog, python3) root; copy it before use."""
    given = os.environ.get("TS_PACKAGING_DEBIAN_ROOT", "")
    if given:
        root = Path(given)
        if not (root / "usr/bin/python3.11").exists():
            pytest.fail(f"TS_PACKAGING_DEBIAN_ROOT={given} is not a Debian 12 root")
        yield root
        return
    ensure_commands("debootstrap")
    root = tmp_path_factory.mktemp("debian12") / "root"
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={DEBIAN_INCLUDE}",
            DEBIAN_SUITE,
            root,
            DEBIAN_MIRROR,
        ],
        timeout=DEBOOTSTRAP_TIMEOUT,
    )
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 300 MB; pytest keeps its last temp dirs


def copy_root(source: Path, target: Path) -> Path:
    """A private copy of a root filesystem (symlinks, owners, modes kept)."""
    run(["cp", "-a", source, target], timeout=300)
    return target


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """The .deb and the .rpm, built once by packaging/build.sh as a release would."""
    ensure_commands("strip")
    # build.sh makes the venv with the distribution's interpreter, which needs its venv module.
    ensure_debian_packages(["python3.11", "python3.11-venv"])
    out = tmp_path_factory.mktemp("dist")
    path = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    run([REPO / "packaging/build.sh", out], timeout=BUILD_TIMEOUT, env={"PATH": path})
    (deb,) = out.glob("tailseal_*.deb")
    (rpm,) = out.glob("tailseal-*.rpm")
    return Packages(deb=deb, rpm=rpm)


def sealed_messages(collector: CollectorProcess) -> tuple[str, list[str]]:
    """(the single stream's state, the messages of its records in seq order, seal excluded)."""
    (stream,) = collector.streams()
    records = sorted(collector.records(), key=lambda r: int(r["seq"]))
    assert records, "the collector stored no records"
    assert records[-1].get("type") == "seal", records[-1]
    return str(stream["state"]), [str(r["msg"]) for r in records if r.get("type") != "seal"]
