"""Processes for the integration tests: the demo model server, bridges and their logs.

``tools.harness.processes.BridgeProcess`` runs ``python -m bridge run``; this adds a
factory that stops every bridge a test started, and readers for the structured
log lines the bridge writes (one JSON object per line, ``"event"`` names it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from tools.harness.processes import (
    DEMO_MODELS,
    REPO,
    BridgeProcess,
    ModelServer,
    local_models_config,
)


def demo_server(log_dir: Path) -> ModelServer:
    """The demo model ``fraud`` (versions 1 and 2, labels stable=1 and canary=2)."""
    config = local_models_config(REPO / "serving" / "models.config", log_dir / "models.config")
    if not (DEMO_MODELS / "fraud" / "1" / "saved_model.pb").exists():
        pytest.fail("the demo model is not exported: run `make models`")
    return ModelServer(
        [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"],
        log_dir / "model-server.log",
        ["fraud"],
    )


def log_events(bridge: BridgeProcess, event: str | None = None) -> list[dict[str, Any]]:
    """The bridge's JSON log lines (optionally only ``event``), oldest first."""
    found = []
    for line in bridge.log_path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue  # aiokafka's standard-library warnings share the file
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line being written right now
        if event is None or entry.get("event") == event:
            found.append(entry)
    return found


def assigned(bridge: BridgeProcess) -> set[int] | None:
    """The partitions of the bridge's latest assignment (None before the first)."""
    events = log_events(bridge, "partitions_assigned")
    return set(events[-1]["partitions"]) if events else None


async def wait_for(
    check: Callable[[], bool], what: str, timeout_s: float = 60.0, explain: Callable[[], str] = str
) -> None:
    """Poll ``check`` until true; a bounded wait whose failure says what it waited for."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{explain()}")
        await asyncio.sleep(0.05)


class Bridges:
    """Starts bridges with logs in one folder; ``close`` stops whatever is still running."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[BridgeProcess] = []

    def start(self, env: Mapping[str, str], name: str = "bridge") -> BridgeProcess:
        log_path = self._log_dir / f"{name}-{len(self.started)}.log"
        bridge = BridgeProcess(env, log_path).start()
        self.started.append(bridge)
        return bridge

    async def start_assigned(
        self, env: Mapping[str, str], name: str = "bridge", timeout_s: float = 60.0
    ) -> BridgeProcess:
        """Start a bridge and wait until the group gave it partitions."""
        bridge = self.start(env, name)
        await asyncio.to_thread(bridge.wait_for_log, "partitions_assigned", timeout_s)
        return bridge

    def close(self) -> None:
        for bridge in self.started:
            bridge.stop(timeout_s=20)  # SIGTERM, SIGKILL if it lingers


def stopped_counts(bridge: BridgeProcess) -> dict[str, Any]:
    """The bridge's final ``stopped`` log line (counts, drained, handed_back)."""
    events = log_events(bridge, "stopped")
    assert events, f"the bridge logged no 'stopped' event:\n{bridge.output()}"
    return events[-1]


def written(bridge: BridgeProcess) -> int:
    """How many output records the bridge says it wrote (results and failures)."""
    stopped = stopped_counts(bridge)
    return int(stopped["results"]) + int(stopped["failures"])
