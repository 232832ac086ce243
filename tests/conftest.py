"""Fixtures shared by the whole suite.

``collector`` here is the reference collector as a subprocess on 127.0.0.1 with real TLS, for
tests that run the agent as a process (e2e, packaging). The collector's own tests override it
with an in-process collector (tests/collector/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import CollectorProcess
from tests.support import TlsFiles, make_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One throwaway CA + server certificate per test session (real TLS, loopback names)."""
    return make_tls_files(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def collector(tmp_path: Path, tls_files: TlsFiles) -> Iterator[CollectorProcess]:
    """The reference collector on 127.0.0.1 (reachable from host-network containers too)."""
    root = tmp_path / "collector"
    root.mkdir()
    process = CollectorProcess(root, tls_files)
    process.start()
    yield process
    process.stop()
