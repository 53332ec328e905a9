"""Fixtures shared by every test folder: the Kafka cluster the tests talk to.

By default each test session starts its own Tansu dev broker on a free loopback
port. Set ``BRIDGE_TEST_KAFKA_BOOTSTRAP=host:port`` to run the same tests against
an external cluster (e.g. a real Apache Kafka); tests that need what Tansu lacks
(idempotent producers, exact high watermarks) ask for ``external_kafka`` and
skip with the reason when it is not set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tools.harness.broker import DevBroker

EXTERNAL_KAFKA_ENV = "BRIDGE_TEST_KAFKA_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a running Kafka-protocol broker for this test session."""
    external = os.environ.get(EXTERNAL_KAFKA_ENV)
    if external:
        yield external
        return
    with DevBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def external_kafka() -> str:
    """A real Apache Kafka cluster, for what the Tansu dev broker does not implement."""
    external = os.environ.get(EXTERNAL_KAFKA_ENV)
    if not external:
        pytest.skip(
            f"needs a real Apache Kafka: set {EXTERNAL_KAFKA_ENV}=host:port "
            "(Tansu has no idempotent producer and reports per-batch high watermarks)"
        )
    return external


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing one broker never read each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"
