"""Fixtures for collector tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.collector.harness import Running, client_context, collector_config, started
from tests.support import TlsFiles


@pytest.fixture
async def collector(tmp_path: Path, tls_files: TlsFiles) -> AsyncIterator[Running]:
    config = collector_config(tmp_path, tls_files)
    async with started(config, client_context(tls_files)) as running:
        yield running
