"""Real journal files for tests, written by ``systemd-journal-remote`` from Journal Export Format.

``journal_remote()`` finds the binary, installing the Debian package ``systemd-journal-remote``
once per session when it is missing (CI machines start clean); a machine where that is
impossible fails the test with the reason, never skips it. ``Journal`` appends entries to one
journal file in a directory: ``systemd-journal-remote --output=FILE`` opens an existing file and
appends, so a test can write while a source follows. Entries get increasing realtime and
monotonic timestamps and the boot id of the machine running the tests (``--boot`` then means
this boot, as on a real host).
"""

from __future__ import annotations

import functools
import itertools
import shutil
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

CANDIDATES = (
    Path("/lib/systemd/systemd-journal-remote"),
    Path("/usr/lib/systemd/systemd-journal-remote"),
)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
Field = str | bytes


def _found() -> Path | None:
    return next((p for p in CANDIDATES if p.exists()), None)


@functools.cache
def journal_remote() -> Path:
    """The ``systemd-journal-remote`` binary, installed with apt-get when missing."""
    found = _found()
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("systemd-journal-remote is missing and apt-get is not available")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "systemd-journal-remote"]
    done = subprocess.run(install, capture_output=True, env=env, timeout=600, check=False)
    if done.returncode != 0:  # stale package lists on a fresh machine: update once, retry
        subprocess.run([apt, "update", "-q"], capture_output=True, env=env, timeout=600, check=True)
        done = subprocess.run(install, capture_output=True, env=env, timeout=600, check=False)
    found = _found()
    if found is None:
        raise RuntimeError(f"installing systemd-journal-remote failed: {done.stderr.decode()}")
    return found


def export_entry(fields: Mapping[str, Field], realtime: int, monotonic: int, boot: str) -> bytes:
    """One entry in Journal Export Format; values that are not plain text use the binary form."""
    out = [
        b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n" % (realtime, monotonic),
        b"_BOOT_ID=" + boot.encode() + b"\n",
    ]
    for name, value in fields.items():
        raw = value.encode() if isinstance(value, str) else value
        if b"\n" in raw or isinstance(value, bytes):
            out.append(name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n")
        else:
            out.append(name.encode() + b"=" + raw + b"\n")
    return b"".join(out) + b"\n"


class Journal:
    """A journal file under ``directory`` that tests append entries to."""

    def __init__(self, directory: Path, name: str = "test.journal", boot: str = BOOT_ID) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / name
        self.boot = boot
        self._clock = itertools.count(int(time.time() * 1_000_000))
        self.realtimes: list[int] = []  # __REALTIME_TIMESTAMP of each entry appended, in µs

    def append(self, entries: Sequence[Mapping[str, Field]]) -> None:
        times = [next(self._clock) for _ in entries]
        self.realtimes += times
        data = b"".join(
            export_entry(f, t, t, self.boot) for f, t in zip(entries, times, strict=True)
        )
        done = subprocess.run(
            [str(journal_remote()), f"--output={self.path}", "-"],
            input=data,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()

    def messages(self, *texts: str, **fields: Field) -> None:
        """Append one entry per text, each with ``fields`` (e.g. SYSLOG_IDENTIFIER)."""
        self.append([{"MESSAGE": text, **fields} for text in texts])
