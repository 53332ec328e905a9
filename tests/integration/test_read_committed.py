"""Transactional input: under the default ``read_committed`` the records of an aborted
transaction are not events (no result, no failure), and ``read_uncommitted`` reads them.

Needs a real Apache Kafka (``BRIDGE_TEST_KAFKA_BOOTSTRAP``, plaintext): the dev broker
has no transactions (``InitProducerId`` fails). The unit tests cover the salvage path's
own reading of aborted transactions (``tests/bridge/test_salvage.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from tests.integration.kafka_io import (
    Item,
    Sent,
    drain_exactly_once,
    ended_as,
    make_topics,
    payment_items,
)
from tests.integration.procs import Bridges
from tools.harness.processes import ModelServer, bridge_env

pytestmark = pytest.mark.integration

PER_TRANSACTION = 40


def produce_transactions(
    bootstrap: str, topic: str, transactions: Sequence[tuple[list[Item], bool]]
) -> list[tuple[Sent, bool]]:
    """Each (items, commit) as one transaction of a librdkafka transactional producer;
    returns every record as stored, with whether its transaction committed. Blocking."""
    from confluent_kafka import Message
    from confluent_kafka import Producer as RdProducer

    producer = RdProducer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"bridge-test-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    stored: list[tuple[Sent, bool]] = []
    for items, commit in transactions:
        delivered: list[Sent] = []
        producer.begin_transaction()
        for item in items:

            def report(
                error: object, message: Message, item: Item = item, into: list[Sent] = delivered
            ) -> None:
                partition, offset = message.partition(), message.offset()
                assert error is None and partition is not None and offset is not None, error
                into.append(Sent(partition, offset, item))

            producer.produce(topic, value=item.value, key=item.key, on_delivery=report)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
        stored += [(sent, commit) for sent in delivered]
    return stored


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
async def test_aborted_transactions_are_not_events_under_read_committed(
    external_kafka: str,
    topic_prefix: str,
    model_server: ModelServer,
    bridges: Bridges,
    isolation: str,
) -> None:
    topics = await make_topics(external_kafka, topic_prefix, inputs=2, results=2, failures=1)
    batches = [
        (payment_items(PER_TRANSACTION, seed=seed), commit)
        for seed, commit in ((1, True), (2, False), (3, True))
    ]
    stored = await asyncio.to_thread(produce_transactions, external_kafka, topics.input, batches)
    expected = [s for s, committed in stored if committed or isolation == "read_uncommitted"]
    env = bridge_env(
        external_kafka,
        topics.names,
        model_server,
        group=topics.group,
        BRIDGE_KAFKA__ISOLATION_LEVEL=isolation,
    )
    bridge = await bridges.start_assigned(env)
    out, _ = await drain_exactly_once(external_kafka, topics, bridge, expected)
    # Exactly the expected inputs ended as a record: under read_committed none of the
    # aborted transaction's (which sit between the two committed ones in each partition).
    assert ended_as(out) == {s.source: s.item.expected for s in expected}
