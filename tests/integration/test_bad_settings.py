"""Bad settings: a clear, fast exit, or a visible hold, never a silent crash loop.

- A missing or invalid required setting: ``bridge run`` exits 2 at once and names
  the environment variable on stderr, before touching Kafka or the model server.
- A model the server does not have: NOT_FOUND (HTTP 404) is retriable, because a
  model may be loading or mid-transition. The bridge therefore holds, logging
  ``waiting_for_model`` with growing backoff, joins no group and consumes nothing,
  and exits 0 on SIGTERM. It does not exit and get restarted in a loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from tests.integration.kafka_io import Topics, make_topics
from tests.integration.procs import Bridges, log_events, wait_for
from tools.harness.processes import REPO, BridgeProcess, ModelServer, bridge_env

pytestmark = pytest.mark.integration

VALID = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",  # never reached: settings fail first
    "BRIDGE_TOPICS__INPUT": "in",
    "BRIDGE_TOPICS__RESULTS": "out",
    "BRIDGE_TOPICS__FAILURES": "dlq",
    "BRIDGE_MODEL__NAME": "fraud",
}


def run_bridge(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "run"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("missing", sorted(VALID))
def test_missing_required_setting_exits_2_and_names_it(missing: str) -> None:
    env = {k: v for k, v in VALID.items() if k != missing}
    done = run_bridge(env)
    assert done.returncode == 2, done
    assert missing in done.stderr, done.stderr
    assert "invalid settings" in done.stderr


def test_invalid_setting_exits_2_and_names_it() -> None:
    done = run_bridge({**VALID, "BRIDGE_BATCH__MAX_SIZE": "0"})
    assert done.returncode == 2, done
    assert "BRIDGE_BATCH__MAX_SIZE" in done.stderr, done.stderr


def unknown_model_env(
    kafka_bootstrap: str, topics: Topics, server: ModelServer, protocol: str
) -> dict[str, str]:
    return bridge_env(
        kafka_bootstrap,
        topics.names,
        server,
        model="no_such_model",
        protocol=protocol,
        group=topics.group,
        BRIDGE_RETRY__INITIAL_BACKOFF_MS="50",
        BRIDGE_RETRY__PROBE_MAX_BACKOFF_MS="400",
    )


async def stays_alive(bridge: BridgeProcess, seconds: float) -> None:
    """An observation window (not a synchronisation): the process must not exit in it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert bridge.process is not None
        assert bridge.process.poll() is None, f"the bridge exited:\n{bridge.output()}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
async def test_unknown_model_holds_waiting_and_stops_cleanly(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    protocol: str,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    bridge = bridges.start(unknown_model_env(kafka_bootstrap, topics, model_server, protocol))
    await asyncio.to_thread(bridge.wait_for_log, "waiting_for_model", 60)
    await stays_alive(bridge, 2.0)
    (first, *_) = log_events(bridge, "waiting_for_model")
    assert first["target"] == "no_such_model@latest" and first["level"] == "warning"
    assert "no_such_model" in first["error"]
    # Nothing is consumed while there is no model to call.
    assert not log_events(bridge, "joining_group")
    assert not log_events(bridge, "partitions_assigned")

    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, bridge.output()
    assert log_events(bridge, "stopping")


async def test_unknown_model_keeps_saying_so_and_is_not_a_server_outage(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    """While it waits for a model the (running) server lacks, the bridge says so repeatedly.

    ``Lanes._signature`` backs off and logs ``waiting_for_model`` again when the server
    is "up, but not ready for this target yet". The server is up here (it serves
    ``fraud``), so the bridge must neither report ``model_server_down`` nor go quiet.
    """
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    bridge = bridges.start(unknown_model_env(kafka_bootstrap, topics, model_server, "grpc"))
    await wait_for(
        lambda: len(log_events(bridge, "waiting_for_model")) >= 3,
        "three waiting_for_model lines (backoff capped at 400 ms)",
        15,
        bridge.output,
    )
    assert not log_events(bridge, "model_server_down"), "the server is up; the model is missing"
    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, bridge.output()
