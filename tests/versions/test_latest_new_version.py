"""A new version under the ``latest`` policy takes over under load, failing nothing.

The server polls a base path that holds only version 1 (``--model_base_path``,
``--file_system_poll_wait_seconds=1``, the default policy ``latest {1}``); the
bridge targets the latest version. Mid-stream version 2 appears on disk
atomically (copied under a hidden name, then renamed to ``2``): the server loads
2, then unloads 1 (availability preserving), and the bridge follows without a
single failed event.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.kafka_io import make_topics
from tests.integration.procs import Bridges
from tests.versions.conftest import StartServer
from tests.versions.switching import (
    Stream,
    assert_no_failures,
    assert_server_never_down,
    finish,
    outputs_for,
    records_for,
    version_of,
    version_states,
    wait_for_outputs,
    wait_for_states,
    wait_until_flowing,
)
from tools.harness.processes import bridge_env

pytestmark = pytest.mark.integration

RATE_PER_S = 50.0


async def test_new_version_under_latest_policy_fails_no_event(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
) -> None:
    base = tmp_path / "latest" / "fraud"
    base.mkdir(parents=True)
    shutil.copytree(fraud_models / "1", base / "1")
    server = await asyncio.to_thread(
        start_server,
        ["--model_name=fraud", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"],
    )
    assert version_states(server) == {1: "AVAILABLE"}

    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(kafka_bootstrap, topics.names, server, group=topics.group)  # latest
    bridge = await bridges.start_assigned(env)

    async with (
        outputs_for(kafka_bootstrap, topics) as outputs,
        Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
    ):
        before = await wait_until_flowing(outputs, stream, bridge, 50, "before version 2")

        # Atomically: the server never sees a half-copied "2".
        incoming = base / ".incoming-2"
        await asyncio.to_thread(shutil.copytree, fraud_models / "2", incoming)
        os.rename(incoming, base / "2")
        copied = time.monotonic()

        await wait_for_outputs(
            outputs,
            stream,
            bridge,
            lambda o: any(version_of(r) == 2 for r in o.results),
            "results served by version 2 (the server polls the disk every second)",
        )
        states = await wait_for_states(server, {2: "AVAILABLE", 1: "END"})
        unloaded = time.monotonic()
        await asyncio.sleep(2.0)  # the stream keeps running on version 2
        sent, _ = await finish(stream, outputs, bridge)

    assert states == {2: "AVAILABLE", 1: "END"}, states
    assert_no_failures(outputs, bridge)
    assert_server_never_down(bridge)
    after = stream.after(unloaded)
    assert len(before) >= 50 and len(after) >= 50, (len(before), len(after))

    versions_before = {version_of(r) for r in records_for(outputs, before)}
    assert versions_before == {1}, f"before version 2 existed, latest served {versions_before}"
    versions_after = {version_of(r) for r in records_for(outputs, after)}
    assert versions_after == {2}, f"after version 1 unloaded, latest served {versions_after}"
    switching = {version_of(r) for r in records_for(outputs, stream.after(copied))}
    assert switching <= {1, 2}, switching
    for record in records_for(outputs, sent):
        assert record.body is not None
        assert record.body["model"]["route"] == "latest", record.body["model"]
