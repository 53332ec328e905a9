"""A pinned version that disappears: bounded retries, then model_not_found; nothing lost.

The server loads versions 1, 2 and 3 (``specific``); the bridge pins version 3
with ``BRIDGE_RETRY__NOT_FOUND_TIMEOUT_MS=3000``. Mid-stream a reloaded config
drops 3, which unloads. Events served before are results from version 3; events
sent after are retried for the NOT_FOUND timeout, then fail with
``model_not_found`` and the server's message naming version 3. Every event still
ends as exactly one record, and the bridge never pauses: the server is up, only
the version is gone.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.kafka_io import BRIDGE, CONNECT, Output, make_topics
from tests.integration.procs import Bridges
from tests.versions.conftest import StartServer
from tests.versions.switching import (
    Stream,
    assert_server_never_down,
    describe_failure,
    finish,
    model_config,
    outputs_for,
    records_for,
    reload_config,
    version_of,
    wait_for_outputs,
    wait_for_states,
    wait_until_flowing,
    write_models_config,
)
from tools.harness.processes import bridge_env

pytestmark = pytest.mark.integration

RATE_PER_S = 40.0
NOT_FOUND_TIMEOUT_MS = 3000
# The retry stops once NOT_FOUND has lasted the timeout, measured from the first
# NOT_FOUND; the recorded times are when attempts began, so the last attempt's own
# duration minus the first one's (milliseconds: NOT_FOUND answers at once) may be
# missing from last - first.
RETRY_SLACK_MS = 200


def assert_not_found_failure(record: Output) -> None:
    """A failure that says version 3 is gone."""
    why = describe_failure(record)
    assert record.header(BRIDGE + "reason") == "model_not_found", why
    assert record.header(BRIDGE + "grpc.status") == "NOT_FOUND", why
    assert record.header(BRIDGE + "retriable") == "true", why
    assert record.header(BRIDGE + "model.version") == "3", why
    message = record.header(CONNECT + "exception.message") or ""
    assert "Specific(fraud, 3)" in message, why


def waited_the_bound(record: Output) -> bool:
    """Retried for the whole NOT_FOUND timeout (the batches that met the change)."""
    attempts = int(record.header(BRIDGE + "attempts") or 0)
    first = int(record.header(BRIDGE + "first.attempt.ms") or 0)
    last = int(record.header(BRIDGE + "last.attempt.ms") or 0)
    return attempts > 1 and last - first >= NOT_FOUND_TIMEOUT_MS - RETRY_SLACK_MS


async def test_pinned_version_unloaded_fails_bounded_and_loses_nothing(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
) -> None:
    shutil.copytree(fraud_models / "2", fraud_models / "3")
    models_config = write_models_config(
        tmp_path / "models.config", model_config(fraud_models, [1, 2, 3])
    )
    server = await asyncio.to_thread(start_server, [f"--model_config_file={models_config}"])
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_MODEL__VERSION="3",
        BRIDGE_RETRY__NOT_FOUND_TIMEOUT_MS=str(NOT_FOUND_TIMEOUT_MS),
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_BATCH__MAX_WAIT_MS="50",
    )
    bridge = await bridges.start_assigned(env)

    async with (
        outputs_for(kafka_bootstrap, topics) as outputs,
        Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
    ):
        before = await wait_until_flowing(outputs, stream, bridge, 40, "before the unload")
        await asyncio.sleep(1.0)  # the stream keeps running into the reload

        await asyncio.to_thread(reload_config, server, model_config(fraud_models, [1, 2]))
        gone = time.monotonic()  # version 3 left the serving map when the reload returned
        states = await wait_for_states(server, {1: "AVAILABLE", 2: "AVAILABLE", 3: "END"})

        await wait_for_outputs(
            outputs,
            stream,
            bridge,
            lambda o: bool(o.failures),
            "the first model_not_found failure (after the 3 s NOT_FOUND timeout)",
        )
        sent, records = await finish(stream, outputs, bridge)

    assert states == {1: "AVAILABLE", 2: "AVAILABLE", 3: "END"}, states
    after = stream.after(gone)
    assert len(before) >= 40 and len(after) >= 40, (len(before), len(after))

    for record in records_for(outputs, before):
        assert record.kind == "result", f"failed before the unload: {describe_failure(record)}"
        assert version_of(record) == 3, record.body
    for record in records_for(outputs, after):
        assert record.kind == "failure", f"a result after version 3 unloaded: {record.body}"
        assert_not_found_failure(record)
    # Around the reload an event may have been served by 3 or failed; never anything else.
    for record in records.values():
        if record.kind == "result":
            assert version_of(record) == 3, record.body
        else:
            assert_not_found_failure(record)
    # The batches in flight when 3 went away were retried for the whole bound; once it
    # had passed, the bridge knew the target was gone and failed the rest at once.
    failures = [r for r in records.values() if r.kind == "failure"]
    bounded = [r for r in failures if waited_the_bound(r)]
    assert bounded, "no failure shows the bounded NOT_FOUND retry"
    assert len(bounded) < len(failures), "every batch waited the whole bound again"
    assert '"event":"target_gone"' in bridge.log_path.read_text()

    # A dead letter is the original event, byte for byte.
    values = {s.source: s.item.value for s in sent}
    for record in outputs.failures:
        assert record.value == values[record.source], record.source

    assert_server_never_down(bridge)
