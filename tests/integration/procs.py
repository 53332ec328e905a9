"""Processes for the integration tests: the demo model server, bridges and their logs.

The bridges (``Bridges`` stops every one a test started) and the readers of their
structured log lines (one JSON object per line, ``"event"`` names it) are the
harness's (``tools.harness.processes``); this adds the waits and checks that assert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tools.harness.processes import (
    DEMO_MODELS,
    REPO,
    BridgeProcess,
    Bridges,
    ModelServer,
    assigned,
    local_models_config,
    log_events,
)

__all__ = [
    "Bridges",
    "assigned",
    "demo_server",
    "log_events",
    "stopped_counts",
    "wait_for",
    "written",
]


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


async def wait_for(
    check: Callable[[], bool], what: str, timeout_s: float = 60.0, explain: Callable[[], str] = str
) -> None:
    """Poll ``check`` until true; a bounded wait whose failure says what it waited for."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{explain()}")
        await asyncio.sleep(0.05)


def stopped_counts(bridge: BridgeProcess) -> dict[str, Any]:
    """The bridge's final ``stopped`` log line (counts, drained, handed_back)."""
    events = log_events(bridge, "stopped")
    assert events, f"the bridge logged no 'stopped' event:\n{bridge.output()}"
    return events[-1]


def written(bridge: BridgeProcess) -> int:
    """How many output records the bridge says it wrote (results and failures)."""
    stopped = stopped_counts(bridge)
    return int(stopped["results"]) + int(stopped["failures"])
