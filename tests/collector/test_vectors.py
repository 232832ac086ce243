"""docs/test-vectors/chain-v1.json: generated from the code, and right by an independent encoder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agent.collector import vectors
from agent.collector.batch import first_new_index, parse_header, parse_records

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "docs" / "test-vectors" / "chain-v1.json"
PROTOCOL = ROOT / "docs" / "protocol.md"


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


def test_vector_file_is_what_the_generator_produces() -> None:
    assert VECTORS.read_bytes() == vectors.render(), (
        "regenerate: python -m agent.collector.vectors docs/test-vectors/chain-v1.json"
    )


def test_vectors_hold_under_an_independent_canonical_encoder() -> None:
    document = load()
    prev = hashlib.sha256(document["genesis_input"].encode()).digest()
    assert document["genesis_input"] == "tailseal/v1\n" + document["stream"]
    assert prev.hex() == document["genesis"]
    for seq, vector in enumerate(document["records"], start=1):
        record = vector["record"]
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert (record["seq"], text) == (seq, vector["canonical"])
        assert vector["prev_h"] == prev.hex()
        prev = hashlib.sha256(prev + text.encode()).digest()
        assert prev.hex() == vector["h"]
        assert vector["wire"] == text[:-1] + f',"h":"{prev.hex()}"}}'
    assert document["batch"]["reply"]["body"] == {"acked": 6, "head": prev.hex()}


def test_vector_batch_is_accepted_by_the_collector_checks() -> None:
    body = load()["batch"]["body"].encode()

    header, offset = parse_header(body)
    batch = parse_records(header, body, offset)

    assert batch.fault is None
    assert (batch.sealed, batch.gap_seqs) == (True, (4,))
    assert first_new_index(batch, 0, header.prev_h) == 0


def test_protocol_document_shows_the_vector_values() -> None:
    document, text = load(), PROTOCOL.read_text(encoding="utf-8")
    records = document["records"]

    for value in (document["genesis"], records[0]["h"], records[0]["canonical"], records[-1]["h"]):
        assert value in text
