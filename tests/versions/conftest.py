"""Fixtures for the version-switch tests: a private copy of the demo models, model
servers and bridges that are always stopped, and the output reader.

The Kafka broker is the session's (``kafka_bootstrap`` in ``tests/conftest.py``).
Every test starts its own model server on its own copy of the models, because
each one changes what the server loads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.procs import Bridges
from tools.harness.processes import DEMO_MODELS, ModelServer


@pytest.fixture
def fraud_models(tmp_path: Path) -> Path:
    """A copy of the demo model's base path (versions 1 and 2) that a test may change."""
    source = DEMO_MODELS / "fraud"
    if not (source / "1" / "saved_model.pb").exists():
        pytest.fail("the demo model is not exported: run `make models`")
    base = tmp_path / "models" / "fraud"
    shutil.copytree(source, base)
    return base


StartServer = Callable[[Sequence[str]], ModelServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start a model server with these flags; every server started is stopped at the end."""
    started: list[ModelServer] = []

    def start(flags: Sequence[str]) -> ModelServer:
        server = ModelServer(flags, tmp_path / f"model-server-{len(started)}.log", ["fraud"])
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Bridges]:
    factory = Bridges(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
