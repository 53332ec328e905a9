"""Fixtures for the integration tests: the model server, topics and bridge processes.

The Kafka broker is the session's (``kafka_bootstrap`` in ``tests/conftest.py``).
A model server is shared by the tests of one module unless a test stops it; every
bridge a test starts is stopped when the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.procs import Bridges, demo_server
from tools.harness.processes import ModelServer


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """One running demo model server for the module's tests (none of them stops it)."""
    server = demo_server(tmp_path_factory.mktemp("model-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Bridges]:
    factory = Bridges(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
