"""Compressed rotated generations: reading them decompressed, and spooling one to be tailed.

logrotate's ``compress`` leaves ``app.log.1.gz`` (or ``.bz2``, ``.xz``, ``.zst``: its
``compresscmd`` choices; ``READABLE_COMPRESSED``). ``rotated.py`` matches such a
sibling by its decompressed first bytes (``decompressed_head``) and, for gzip, its size from the
trailer (``gzip_size``); the file source reads one by ``spool``: its content, decompressed into an
anonymous file under ``state_dir/spool`` with only the fingerprint and the part still to read
written (the rest is a hole), then tailed like any file. The spool stops while ``SPOOL_RESERVE``
of its filesystem (the buffer's) is free: a generation that decompresses to more is read only in
part, with a warning. Damaged data is read up to the damage (``read1``: a truncated gzip gives
what decompresses); bit flips may ship garbled lines before a codec's check at the end fails.

Blocking I/O on the paths given; runs in the file source's worker threads, holds no state.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

# The compressed generations that are read (decompressed): logrotate's compresscmd choices.
# lz4, zip and .Z (compress) are not: such a sibling is left alone.
READABLE_COMPRESSED = re.compile(r"\.(gz|xz|zst|bz2)$")
_DECOMPRESS_CHUNK = 1 << 16  # read1: what one read of the file gives, so damage costs little

Decompressed = io.BufferedIOBase | zstandard.ZstdDecompressionReader


@contextlib.contextmanager
def decompressing(path: str, raw: BinaryIO | None = None) -> Iterator[Decompressed]:
    """The decompressed content of ``path`` (named ``.gz``, ``.bz2``, ``.xz`` or ``.zst``; every
    member or frame, as the tools read them), read from ``raw`` when given; both are closed on
    leaving. Raises OSError if ``path`` cannot be opened; reading damaged data raises an error
    of the codec's (see ``DECOMPRESS_ERRORS``)."""
    with contextlib.ExitStack() as stack:
        if raw is None:
            raw = stack.enter_context(open(path, "rb"))
        else:
            stack.callback(raw.close)
        stream = _codec(path, raw)
        stack.callback(stream.close)  # first: the codecs leave the file they were given open
        yield stream


def _codec(path: str, raw: BinaryIO) -> Decompressed:
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, "rb")
    if path.endswith(".xz"):
        return lzma.LZMAFile(raw, "rb")
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


# What reading a damaged compressed file raises (besides OSError: gzip's BadGzipFile is one).
DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def content_head(path: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes a regular file holds: decompressed for a compressed one
    (``READABLE_COMPRESSED``); None if they cannot be read. Never blocks on a FIFO."""
    if READABLE_COMPRESSED.search(path):
        return decompressed_head(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        want = min(st.st_size, limit)
        return os.pread(fd, want, 0) if want > 0 else b""
    except OSError:
        return None
    finally:
        os.close(fd)


def decompressed_head(path: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes of the decompressed content of ``path``; None if unreadable."""
    try:
        with decompressing(path) as stream:
            return _read_up_to(stream, limit)
    except DECOMPRESS_ERRORS:
        return None


def decompressed_size(path: str) -> int | None:
    """The size of the decompressed content of ``path`` (one pass, nothing kept): up to the
    damage, if its data is damaged part way; None if it cannot be read at all."""
    size = 0
    try:
        with decompressing(path) as stream:
            while chunk := stream.read1(_DECOMPRESS_CHUNK):
                size += len(chunk)
    except DECOMPRESS_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            return None
    return size


def gzip_size(path: str) -> int | None:
    """The size its last member says a gzip file decompresses to, modulo 2**32 (ISIZE, its last
    four bytes): the whole size for the single member a compressing tool writes."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) < 18:  # header and trailer of the smallest member
                return None
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return None


def xz_size(path: str) -> int | None:
    """The size an xz file decompresses to, from its index (read from its end: two reads), when
    the file is one stream without padding, as xz writes it, and the index's CRC32 holds; else
    None (the size is then found by decompressing)."""
    tail = _xz_index(path)
    if tail is None:
        return None
    total, index = tail
    if zlib.crc32(index[:-4]) != int.from_bytes(index[-4:], "little") or index[0] != 0:
        return None
    numbers = _varints(index[1:-4])
    if numbers is None:
        return None
    blocks = sum((unpadded + 3) // 4 * 4 for unpadded in numbers[1::2])
    if 12 + blocks + len(index) + 12 != total:
        return None  # several streams, or padding: not this simple shape
    return sum(numbers[2::2])


def _xz_index(path: str) -> tuple[int, bytes] | None:
    """The size of an xz file and the index its stream footer points to."""
    try:
        with open(path, "rb") as f:
            total = f.seek(0, os.SEEK_END)
            if total < 32:
                return None
            f.seek(total - 12)
            footer = f.read(12)
            index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
            if footer[10:] != b"YZ" or index_size + 24 > total:
                return None
            f.seek(total - 12 - index_size)
            return total, f.read(index_size)
    except OSError:
        return None


def _varints(data: bytes) -> list[int] | None:
    """xz's multibyte integers in ``data``, then only zero padding; None if malformed."""
    numbers: list[int] = []
    value = shift = 0
    for at, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                return None
            continue
        numbers.append(value)
        value = shift = 0
        if numbers[0] * 2 + 1 == len(numbers):
            return numbers if not any(data[at + 1 :]) else None
    return None


def _read_up_to(stream: Decompressed, limit: int) -> bytes:
    parts: list[bytes] = []
    want = limit
    while want > 0 and (chunk := stream.read(want)):
        parts.append(chunk)
        want -= len(chunk)
    return b"".join(parts)


def spool(
    path: str, start: int, fp_bytes: int, directory: str, ident: str = ""
) -> tuple[int, os.stat_result, str]:
    """The decompressed content of ``path`` as an anonymous file in ``directory``, to be read
    from ``start``: its first ``fp_bytes`` (the fingerprint) and everything from ``start`` on,
    at their own offsets (what lies between is a hole: no disk is spent on it). Returns its
    descriptor, the stat of the file decompressed (its identity) and, if the data is damaged
    part way or the spool ran short of space, why the rest is not there. ``ident``: the
    identity planned; another file now at ``path`` raises FileNotFoundError. OSError: ``path``
    or the spool. The file is read through the one descriptor its identity was taken from."""
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 -- the stream below closes it
    try:
        st = os.fstat(raw.fileno())
        _check_planned(path, st, ident)
        os.makedirs(directory, mode=0o700, exist_ok=True)  # noqa: PTH103
        with tempfile.TemporaryFile(dir=directory) as out:
            fd = os.dup(out.fileno())
    except BaseException:
        raw.close()
        raise
    try:
        with decompressing(path, raw) as stream:
            why = _decompress_into(stream, fd, start, fp_bytes, directory)
    except BaseException:
        os.close(fd)
        raise
    return fd, st, why


def _check_planned(path: str, st: os.stat_result, ident: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", path)
    if ident and f"{st.st_dev}:{st.st_ino}" != ident:
        raise FileNotFoundError(errno.ENOENT, "rotated again since it was found", path)


# The spool stops short of filling its filesystem (the buffer's): it leaves this share free.
SPOOL_RESERVE = 0.10


def _decompress_into(
    stream: Decompressed, fd: int, start: int, fp_bytes: int, directory: str
) -> str:
    offset = 0
    lines_end = 0  # just after the last newline spooled from ``start`` on
    room = _spool_room(directory)
    try:
        while chunk := stream.read1(_DECOMPRESS_CHUNK):
            end = offset + len(chunk)
            if offset < fp_bytes:
                os.pwrite(fd, chunk[: fp_bytes - offset], offset)
            if end > start:
                skip = max(0, start - offset)
                if len(chunk) - skip > room:  # checked again before giving up: others free
                    room = _spool_room(directory)
                    if len(chunk) - skip > room:
                        # End on a whole line: the rest is read at the next start, not cut.
                        os.ftruncate(fd, max(lines_end, min(offset, fp_bytes)))
                        return (
                            f"the spool's filesystem ({directory}) would fall below "
                            f"{SPOOL_RESERVE:.0%} free (after {lines_end or start} bytes); "
                            "the rest is read at the next start"
                        )
                os.pwrite(fd, chunk[skip:], offset + skip)
                room -= len(chunk) - skip
                newline = chunk.rfind(b"\n", skip)
                if newline >= 0:
                    lines_end = offset + newline + 1
            offset = end
    except DECOMPRESS_ERRORS as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the file or the spool (disk full), not the data
        return f"{type(exc).__name__}: {exc} (after {offset} bytes)"
    return ""


def _spool_room(directory: str) -> int:
    """Bytes the spool may still write in ``directory``'s filesystem."""
    fs = os.statvfs(directory)
    return fs.f_bavail * fs.f_frsize - int(fs.f_blocks * fs.f_frsize * SPOOL_RESERVE)
