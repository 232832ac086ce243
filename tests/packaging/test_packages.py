"""The .deb and the .rpm built by packaging/build.sh: files, conffiles, scriptlets, venv.

Installing and booting the .deb is test_boot.py; here the archives themselves are read back
with the distributions' own tools (dpkg-deb, rpm).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.conftest import Packages
from tests.packaging.tools import ensure_commands, run

CONFIG_FILES = {
    "/etc/tailseal/tailseal.toml",
    "/etc/tailseal/environment",
    "/etc/tailseal/conf.d/README",
    "/etc/profile.d/tailseal.sh",
}
FILES = {
    "/opt/tailseal/bin/tailseal",
    "/opt/tailseal/bin/python3.11",
    "/opt/tailseal/pyvenv.cfg",
    "/usr/bin/tailseal",
    "/usr/lib/systemd/system/tailseal.service",
    "/usr/lib/tmpfiles.d/tailseal.conf",
    "/etc/tailseal/conf.d",
    *CONFIG_FILES,
}


def deb_paths(deb: Path) -> dict[str, str]:
    """Installed path -> the tar listing line."""
    listing = run(["dpkg-deb", "--contents", deb], timeout=60).stdout.splitlines()
    out = {}
    for line in listing:
        name = line.split(None, 5)[5].split(" -> ")[0]
        out[name.removeprefix(".").rstrip("/")] = line
    return out


@pytest.mark.slow
def test_deb_holds_the_venv_unit_and_conffiles_and_no_state(
    packages: Packages, tmp_path: Path
) -> None:
    ensure_commands("dpkg-deb")
    paths = deb_paths(packages.deb)
    run(["dpkg-deb", "--control", packages.deb, tmp_path / "control"], timeout=60)
    control = (tmp_path / "control" / "control").read_text()

    assert paths.keys() >= FILES
    assert set((tmp_path / "control" / "conffiles").read_text().split()) == CONFIG_FILES
    assert not [p for p in paths if p.startswith("/var/lib")]  # no identity in the package
    assert "Depends: python3.11" in control
    assert "-> /usr/bin/python3.11" in paths["/opt/tailseal/bin/python3.11"]
    assert not [p for p in paths if "/site-packages/pip/" in p]
    assert paths["/etc/tailseal/environment"].startswith("-rw-------")
    for script in ("preinst", "postinst", "prerm", "postrm"):
        assert (tmp_path / "control" / script).stat().st_mode & 0o111


@pytest.mark.slow
def test_venv_scripts_point_at_the_installed_prefix_not_the_build_directory(
    packages: Packages, tmp_path: Path
) -> None:
    run(["dpkg-deb", "--extract", packages.deb, tmp_path], timeout=120)
    venv = tmp_path / "opt" / "tailseal"

    assert (venv / "bin/tailseal").read_text().startswith("#!/opt/tailseal/bin/python")
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert "command = /usr/bin/python3.11 -m venv /opt/tailseal" in cfg  # not the staging dir
    # Byte-compiled for a read-only /opt: every module has its .pyc next to it.
    assert list(venv.glob("lib/python3.11/site-packages/agent/__pycache__/cli.*.pyc"))


@pytest.mark.slow
def test_rpm_file_list_config_files_and_scriptlets(packages: Packages) -> None:
    ensure_commands("rpm")
    files = set(run(["rpm", "-qlp", packages.rpm], timeout=60).stdout.split())
    configs = set(run(["rpm", "-qcp", packages.rpm], timeout=60).stdout.split())
    requires = run(["rpm", "-qRp", packages.rpm], timeout=60).stdout
    scripts = run(["rpm", "-qp", "--scripts", packages.rpm], timeout=60).stdout

    assert files >= FILES
    assert configs == CONFIG_FILES
    assert not [p for p in files if p.startswith("/var/lib")]
    assert "python3.11" in requires.split()
    for scriptlet in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{scriptlet} scriptlet" in scripts
    # %pre creates the user, %post enables without starting, %preun stops on erase (drain).
    assert "useradd --system" in scripts
    assert "systemctl enable tailseal.service" in scripts
    assert "systemctl start" not in scripts
    assert "systemctl stop tailseal.service" in scripts
