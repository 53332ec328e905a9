"""Every input ends as exactly one record, in order, and the group commits to the end.

The bridge runs as a process (``python -m bridge run``) against the dev broker and
the local model server, over gRPC and REST, per event and micro-batched. The
outputs are read back from the topics and mapped to the inputs by source
partition and offset.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.integration.kafka_io import (
    BRIDGE,
    CONNECT,
    GroupOffsets,
    Item,
    Outputs,
    Producer,
    end_offsets,
    make_topics,
    order_violations,
    payment_items,
    wait_for_inputs,
)
from tests.integration.procs import Bridges, stopped_counts
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

N = 300
MAX_EVENT_BYTES = 4096


def special_items() -> list[Item]:
    """Failures the synthetic payments do not make: a tombstone and an oversize event."""
    headers = (("trace-id", b"special"),)
    oversize = orjson.dumps({"time": 1.0, "amount": 2.0, "pca": [0.0] * 28, "x": "y" * 5000})
    return [
        Item(b"card-tombstone", None, headers, "not_json"),
        Item(b"card-oversize", oversize, headers, "oversize"),
        Item(None, b'{"time": 1.0}', (), "missing_input"),  # no key, no headers
    ]


# (protocol, max batch size, target settings, the model.version results must carry)
CASES = [
    pytest.param("grpc", 1, {}, 2, id="grpc-per-event-latest"),
    pytest.param("grpc", 32, {"BRIDGE_MODEL__LABEL": "stable"}, 1, id="grpc-batch32-stable"),
    # TF Serving's REST predict response does not name the version: null for a label.
    pytest.param("rest", 1, {"BRIDGE_MODEL__LABEL": "canary"}, None, id="rest-per-event-canary"),
    pytest.param("rest", 32, {"BRIDGE_MODEL__VERSION": "1"}, 1, id="rest-batch32-version1"),
]


@pytest.mark.parametrize(("protocol", "max_size", "target", "version"), CASES)
async def test_every_input_ends_as_exactly_one_record(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    protocol: str,
    max_size: int,
    target: dict[str, str],
    version: int | None,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        model_server,
        protocol=protocol,
        group=topics.group,
        BRIDGE_BATCH__MAX_SIZE=str(max_size),
        BRIDGE_BATCH__MAX_WAIT_MS="5",
        BRIDGE_MODEL__MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
        **target,
    )
    bridge = await bridges.start_assigned(env)

    items = payment_items(N, malformed_every=7) + special_items()
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    assert {s.partition for s in sent} == {0, 1, 2}, "the keys should spread over 3 partitions"

    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        code = await asyncio.to_thread(bridge.stop)
        assert code == 0, f"SIGTERM should exit 0, got {code}:\n{bridge.output()}"
        stopped = stopped_counts(bridge)
        # Everything the bridge says it wrote, then anything beyond it.
        await outputs.wait_for_count(stopped["results"] + stopped["failures"])
        committed = await offsets.read()

    # Exactly one record per input, and none for anything else.
    by_source = outputs.by_source()
    inputs = {s.source: s for s in sent}
    assert set(by_source) == set(inputs), (
        f"outputs for unknown inputs: {sorted(set(by_source) - set(inputs))[:10]}, "
        f"inputs without output: {sorted(set(inputs) - set(by_source))[:10]}"
    )
    extra = {source: len(records) for source, records in by_source.items() if len(records) != 1}
    assert not extra, f"inputs with more than one record (source -> count): {extra}"
    assert stopped["events"] == len(sent)
    assert stopped["results"] + stopped["failures"] == len(sent)
    assert stopped["handed_back"] == 0 and stopped["drained"] is True

    for source, (output,) in by_source.items():
        item = inputs[source].item
        assert output.source_topic == topics.input
        assert output.key == item.key, f"{source}: key changed"
        if item.expected == "result":
            why = output.header(CONNECT + "exception.message")
            assert output.kind == "result", f"{source}: a valid payment failed: {why}"
            assert output.headers == item.headers, f"{source}: result headers differ"
            body = output.body
            assert body is not None
            assert body["model"]["name"] == "fraud"
            assert body["model"]["version"] == version, f"{source}: {body['model']}"
            assert set(body["outputs"]) == {"fraud_probability", "flagged"}
            assert 0.0 <= body["outputs"]["fraud_probability"] <= 1.0
            assert isinstance(body["outputs"]["flagged"], bool)
            assert body["source"]["offset"] == source[1]
        else:
            assert output.kind == "failure", f"{source}: expected {item.expected}, got a result"
            # Byte-identical dead letter: original value and headers first, untouched.
            assert output.value == item.value, f"{source}: value changed"
            assert output.headers[: len(item.headers)] == item.headers, f"{source}: headers"
            assert output.header(BRIDGE + "reason") == item.expected, source
            assert output.header(BRIDGE + "retriable") == "false"
            assert output.header(BRIDGE + "attempts") == "0", "no model call for a bad event"
            assert output.header(CONNECT + "topic") == topics.input

    assert not order_violations(outputs, topics.partitions)

    # The group committed exactly to the end of each input partition.
    assert committed == end_offsets(sent)
