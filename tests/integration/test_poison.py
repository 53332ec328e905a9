"""An event the server rejects, inside a full micro-batch, fails alone.

The bridge validates dtypes and shapes before it calls the model, so a poison
event has to be one only the model refuses. The demo model takes any float, so
this module exports a toy model, ``guard``, whose function asserts that its
input is not negative: a negative ``amount`` is INVALID_ARGUMENT on the server
(HTTP 400 over REST). In a batch of 16 the bridge splits until the one bad
event is isolated; the other 15 still get results.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.kafka_io import (
    BRIDGE,
    GroupOffsets,
    Item,
    Outputs,
    Producer,
    end_offsets,
    make_topics,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, log_events, stopped_counts, written
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

BATCH = 16
POISON_AT = 9  # the poison's position in the batch


def export_guard_model(path: Path) -> None:
    """``doubled = 2 * amount``, with ``tf.debugging.assert_non_negative(amount)``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # only here: the bridge itself never imports TensorFlow

    class Guard(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="amount")])
        def serve(self, amount: tf.Tensor) -> dict[str, tf.Tensor]:
            check = tf.debugging.assert_non_negative(amount, message="amount must be >= 0")
            with tf.control_dependencies([check]):
                return {"doubled": amount * 2.0}

    module = Guard()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def guard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    root = tmp_path_factory.mktemp("guard")
    export_guard_model(root / "models" / "guard" / "1")
    server = ModelServer(
        ["--model_name=guard", f"--model_base_path={root / 'models' / 'guard'}"],
        root / "model-server.log",
        ["guard"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("protocol", "status_header", "status"),
    [("grpc", "grpc.status", "INVALID_ARGUMENT"), ("rest", "http.status", "400")],
)
async def test_server_rejected_event_fails_alone_in_a_full_batch(
    kafka_bootstrap: str,
    topic_prefix: str,
    guard_server: ModelServer,
    bridges: Bridges,
    protocol: str,
    status_header: str,
    status: str,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=1, results=1, failures=1)
    amounts = [float(i + 1) for i in range(BATCH)]
    amounts[POISON_AT] = -5.0
    items = [
        Item(
            f"k{i}".encode(),
            orjson.dumps({"amount": amount}),
            (("n", str(i).encode()),),
            "result" if amount >= 0 else "rejected_input",
            partition=0,
        )
        for i, amount in enumerate(amounts)
    ]
    # Produced before the bridge starts: its first fetch holds all 16, one full batch.
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items, chunk=BATCH)

    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        guard_server,
        model="guard",
        protocol=protocol,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE=str(BATCH),
        BRIDGE_BATCH__MAX_WAIT_MS="5000",  # a partial fetch still ends in one batch of 16
        BRIDGE_LOG__LEVEL="debug",  # the per-batch lines are at debug
    )
    bridge = await bridges.start_assigned(env)
    async with (
        Outputs.of(kafka_bootstrap, topics) as out,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(out, sent, offsets, 60, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, bridge.output()
        await out.wait_for_count(written(bridge))
        final = await offsets.read()

    batches = log_events(bridge, "batch")
    assert [b["size"] for b in batches] == [BATCH], f"expected one batch of {BATCH}: {batches}"
    assert batches[0]["failed"] == 1
    splits = log_events(bridge, "batch_rejected_splitting")
    assert splits and splits[0]["size"] == BATCH, "the full batch was rejected, then split"

    (failure,) = out.failures
    poison = sent[POISON_AT]
    assert failure.source == poison.source
    assert failure.value == poison.item.value and failure.key == poison.item.key
    assert failure.headers[:1] == poison.item.headers
    assert failure.header(BRIDGE + "reason") == "rejected_input"
    assert failure.header(BRIDGE + "retriable") == "false"
    assert int(failure.header(BRIDGE + "attempts") or 0) >= 1
    assert failure.header(BRIDGE + status_header) == status
    assert failure.header(BRIDGE + "protocol") == protocol
    assert "amount must be >= 0" in (failure.header("__connect.errors.exception.message") or "")

    results = {r.source: r for r in out.results}
    assert len(results) == BATCH - 1
    for record in sent:
        if record is poison:
            continue
        body = results[record.source].body
        assert body is not None
        amount = orjson.loads(record.item.value or b"")["amount"]
        assert body["outputs"] == {"doubled": amount * 2}
    assert stopped_counts(bridge)["failures"] == 1
    assert final == end_offsets(sent)
