"""Batch decoding without a server: bounded decompression, structure, chain faults, linking."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
import zstandard

from agent.collector.batch import (
    Batch,
    BatchError,
    decompress,
    first_new_index,
    parse_header,
    parse_records,
)
from tests.collector.chains import Chain, make_chain, tampered

LIMIT = 1024 * 1024


def parsed(chain: Chain, first: int, last: int, lines: list[bytes] | None = None) -> Batch:
    data = chain.batch(first, last, lines=lines)
    header, offset = parse_header(data)
    return parse_records(header, data, offset)


def test_concatenated_gzip_members_decode_as_one_body() -> None:
    body = gzip.compress(b"first part\n") + gzip.compress(b"second part\n")

    assert decompress(body, "gzip", LIMIT) == b"first part\nsecond part\n"


def test_concatenated_zstd_frames_decode_as_one_body() -> None:
    compressor = zstandard.ZstdCompressor()
    body = compressor.compress(b"first part\n") + compressor.compress(b"second part\n")

    assert decompress(body, "zstd", LIMIT) == b"first part\nsecond part\n"


def test_streamed_zstd_frame_without_content_size_decodes() -> None:
    writer = zstandard.ZstdCompressor().compressobj()
    body = writer.compress(b"x" * 500_000) + writer.flush()

    assert decompress(body, "zstd", LIMIT) == b"x" * 500_000


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(b"a" * 10_000)[:-12]),
        ("gzip", gzip.compress(b"a") + b"trailing junk"),
        ("gzip", b"plain text"),
        ("zstd", zstandard.ZstdCompressor().compress(b"a") + b"trailing junk"),
        ("zstd", b"plain text"),
    ],
    ids=["gzip-truncated", "gzip-trailing-junk", "gzip-not-gzip", "zstd-junk", "zstd-not-zstd"],
)
def test_corrupt_compressed_body_is_a_400(encoding: str, body: bytes) -> None:
    with pytest.raises(BatchError) as caught:
        decompress(body, encoding, LIMIT)

    assert caught.value.status == 400


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_decompression_bomb_is_refused_with_413(encoding: str) -> None:
    inflated = b"\0" * (16 * LIMIT)
    body = (
        zlib.compress(inflated, wbits=31)
        if encoding == "gzip"
        else zstandard.ZstdCompressor().compress(inflated)
    )

    with pytest.raises(BatchError) as caught:
        decompress(body, encoding, LIMIT)

    assert caught.value.status == 413


def test_identity_body_over_the_decompressed_limit_is_a_413() -> None:
    with pytest.raises(BatchError) as caught:
        decompress(b"x" * (LIMIT + 1), "identity", LIMIT)

    assert caught.value.status == 413


def test_repeat_of_held_records_needs_no_append() -> None:
    chain = make_chain(6)
    batch = parsed(chain, 2, 4)

    assert first_new_index(batch, 6, chain.head(6)) == 3


def test_bad_h_is_judged_after_linking() -> None:
    chain = make_chain(6)
    lines = [*chain.lines[3:5], tampered(chain.line(6), msg="changed")]
    batch = parsed(chain, 4, 6, lines)

    with pytest.raises(BatchError) as gap:
        first_new_index(batch, 1, chain.head(1))
    with pytest.raises(BatchError) as bad:
        first_new_index(batch, 3, chain.head(3))

    assert (gap.value.status, gap.value.payload) == (409, {"expected": 2})
    assert bad.value.status == 400
    assert "record 6" in bad.value.payload["error"]


def test_a_body_of_bare_newlines_is_refused_without_an_object_per_line() -> None:
    # 4 MiB of "\n" compresses to a few KB; a header claiming that many records passed the
    # count check, then held 8 bytes (compiled) or ~48 bytes (Python) per line.
    lines = 4 * 1024 * 1024
    data = make_chain(1).batch(1, lines, lines=[b""] * lines)
    header, offset = parse_header(data)
    tracemalloc.start()
    try:
        with pytest.raises(BatchError) as refused:
            parse_records(header, data, offset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert refused.value.status == 400
    assert refused.value.payload["error"].startswith("record 1: invalid JSON")  # as ever
    assert peak < 1024 * 1024


def test_a_short_body_is_refused_for_its_first_line_shaped_wrong_as_ever() -> None:
    chain = make_chain(4)
    short = [b'{"seq":2}', b'{"seq":3}', b'{"seq":4}']

    with pytest.raises(BatchError) as refused:
        parsed(chain, 1, 4, lines=[chain.line(1), *short])

    assert refused.value.status == 400
    assert refused.value.payload["error"] == "record 2: h is missing"


def test_short_lines_shaped_right_are_judged_after_linking_as_ever() -> None:
    # Too short to verify, but shaped as records: a fault, not a 400 at once (a batch that does
    # not link still gets its 409 first).
    chain = make_chain(3)
    lines = [b'{"h":"","seq":1}', b'{"h":"","seq":2}', b'{"h":"","seq":3}']

    batch = parsed(chain, 1, 3, lines=lines)

    assert batch.fault == "record 1: h does not verify"


def test_a_short_body_with_the_wrong_count_is_refused_for_its_count() -> None:
    chain = make_chain(3)

    with pytest.raises(BatchError) as refused:
        parsed(chain, 1, 3, lines=[b"{}", b"{}"])

    assert refused.value.payload["error"] == "header announces 3 records, body holds 2"
