"""The .deb in a booted Debian 12: baked without starting, ships at boot, seals at poweroff.

The image bake is ``dpkg -i`` in a chroot of a debootstrap root; the instance is that root
booted with ``systemd-nspawn --boot`` on the host's network, so the agent reaches the test's
collector on 127.0.0.1. rsyslog writes the real root:adm 0640 /var/log/auth.log. A witness unit
ordered after tailseal (as sshd is) logs an auth line at boot and one as it stops, and waits
until rsyslog wrote it: at poweroff that last line must still be swept, shipped and sealed,
which only works with the unit's ordering (stop after the loggers, before rsyslog and network).
``--kill-signal=SIGRTMIN+4`` turns nspawn's SIGTERM into the container's own ``poweroff``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import TOKEN, CollectorProcess
from tests.packaging.conftest import Packages, copy_root, sealed_messages
from tests.packaging.tools import ensure_commands, run, tool
from tests.support import TlsFiles, eventually_sync

BOOT_TIMEOUT = 120.0
POWEROFF_TIMEOUT = 90.0
PRE_BOOT_LINE = "Nov 21 22:00:00 image-bake sshd[1]: Accepted publickey for baker port 1 ssh2"

WITNESS_UNIT = """\
[Unit]
Description=Logs auth lines after tailseal started and as it stops, like sshd
After=tailseal.service rsyslog.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/logger -p authpriv.notice "auth-witness: hello"
ExecStop=/bin/sh -c 'logger -p authpriv.notice "auth-witness: goodbye"; \
until grep -q "auth-witness: goodbye" /var/log/auth.log; do sleep 0.1; done'
TimeoutStopSec=10
[Install]
WantedBy=multi-user.target
"""


def ids(root: Path, database: str) -> dict[str, int]:
    """Name -> numeric id from the root's /etc/passwd or /etc/group."""
    lines = (root / "etc" / database).read_text().splitlines()
    return {fields[0]: int(fields[2]) for fields in (line.split(":") for line in lines)}


def bake(root: Path, deb: Path) -> None:
    shutil.copy(deb, root / "root" / deb.name)
    run(["chroot", root, "dpkg", "-i", f"/root/{deb.name}"], timeout=300)
    (root / "root" / deb.name).unlink()


def configure(root: Path, collector: CollectorProcess, tls: TlsFiles) -> None:
    """What an image builder or cloud-init would write: the collector, its CA, the token."""
    group = ids(root, "group")
    etc = root / "etc" / "tailseal"
    shutil.copy(tls.ca_file, etc / "ca.pem")
    token = etc / "token"
    token.write_text(TOKEN + "\n")
    os.chown(token, 0, group["tailseal"])
    token.chmod(0o640)
    (etc / "tailseal.toml").write_text(
        f"""
state_dir = "/var/lib/tailseal"
[sources.auth]
type = "file"
paths = ["/var/log/auth.log"]
[sinks.central]
type = "tailseal"
endpoint = "https://127.0.0.1:{collector.port}"
token_file = "/etc/tailseal/token"
ca_file = "/etc/tailseal/ca.pem"
"""
    )
    auth_log = root / "var" / "log" / "auth.log"
    auth_log.write_text(PRE_BOOT_LINE + "\n")
    os.chown(auth_log, 0, group["adm"])
    auth_log.chmod(0o640)
    units = root / "etc" / "systemd" / "system"
    (units / "auth-witness.service").write_text(WITNESS_UNIT)
    (units / "multi-user.target.wants" / "auth-witness.service").symlink_to(
        "/etc/systemd/system/auth-witness.service"
    )


def boot(root: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                tool("systemd-nspawn"),
                "--boot",
                "--register=no",  # no machined on the host
                "--keep-unit",
                "--kill-signal=SIGRTMIN+4",
                "--console=pipe",
                "--directory",
                str(root),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def messages_held(collector: CollectorProcess) -> list[str]:
    return [str(r.get("msg")) for r in collector.records()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deb_in_a_booted_debian_ships_auth_log_and_seals_it_at_poweroff(
    debian_root: Path,
    packages: Packages,
    collector: CollectorProcess,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    ensure_commands("systemd-nspawn")
    root = copy_root(debian_root, tmp_path / "root")
    try:
        bake(root, packages.deb)
        # Enabled for the first boot, but nothing ran: no state directory, no stream identity.
        wants = root / "etc/systemd/system/multi-user.target.wants/tailseal.service"
        assert wants.is_symlink()
        assert not (root / "var/lib/tailseal").exists()
        assert "tailseal" in ids(root, "passwd")

        configure(root, collector, tls_files)
        machine = boot(root, tmp_path / "nspawn.log")
        try:
            eventually_sync(
                lambda: "auth-witness: hello" in " ".join(messages_held(collector)),
                timeout=BOOT_TIMEOUT,
                what="the boot-time auth line at the collector",
            )
            machine.send_signal(signal.SIGTERM)  # -> SIGRTMIN+4: poweroff inside
            assert machine.wait(timeout=POWEROFF_TIMEOUT) == 0
        finally:
            if machine.poll() is None:
                machine.kill()
                machine.wait(timeout=30)

        state, shipped = sealed_messages(collector)
        written = (root / "var/log/auth.log").read_text().splitlines()
        assert state == "sealed"
        assert shipped == written, (tmp_path / "nspawn.log").read_text()[-3000:]
        assert shipped[0] == PRE_BOOT_LINE
        assert any(line.endswith("auth-witness: goodbye") for line in shipped)
        # It ran as the tailseal user: systemd made the state directory its own.
        assert (root / "var/lib/tailseal").stat().st_uid == ids(root, "passwd")["tailseal"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
