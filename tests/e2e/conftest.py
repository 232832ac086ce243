"""Fixtures for the end-to-end suite: a running collector subprocess with real TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import CollectorProcess
from tests.support import TlsFiles


@pytest.fixture
def collector(tmp_path: Path, tls_files: TlsFiles) -> Iterator[CollectorProcess]:
    root = tmp_path / "collector"
    root.mkdir()
    process = CollectorProcess(root, tls_files)
    process.start()
    yield process
    process.stop()
