"""DELIVERY__ORDERING=key with the real parts: a pinned version gone for 10 s holds only its keys.

Routes send a few keys (by their hash) to version 3 and the rest to version 1.
Mid-stream version 3 is unloaded for 10 s and loaded again: the events routed to
it are retried (NOT_FOUND: a version mid-move) the whole time. The other keys'
results keep coming at the rate they came before; afterwards every event has
exactly one record, each key's records are in input order, and none failed.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import defaultdict
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
    model_config,
    outputs_for,
    reload_config,
    route_of,
    wait_for_states,
    wait_until_flowing,
    write_models_config,
)
from tools.harness.processes import bridge_env

pytestmark = pytest.mark.integration

RATE_PER_S = 40.0
HOLD_S = 10.0
BEFORE_S = 5.0


async def test_a_version_gone_for_10_s_holds_only_the_keys_routed_to_it(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
) -> None:
    shutil.copytree(fraud_models / "2", fraud_models / "3")
    with_3 = model_config(fraud_models, [1, 3])
    config = write_models_config(tmp_path / "models.config", with_3)
    server = await asyncio.to_thread(start_server, [f"--model_config_file={config}"])
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_DELIVERY__ORDERING="key",
        BRIDGE_MODEL__ROUTES='{"1": 97, "3": 3}',
        BRIDGE_RETRY__NOT_FOUND_TIMEOUT_MS="60000",  # held, not failed, for the whole test
        # Each held batch keeps a request busy while it is retried: room for all of them.
        BRIDGE_BATCH__MAX_IN_FLIGHT="32",
        BRIDGE_BATCH__MAX_SIZE="16",
        BRIDGE_BATCH__MAX_WAIT_MS="100",
    )
    bridge = await bridges.start_assigned(env)

    async with (
        outputs_for(kafka_bootstrap, topics) as outputs,
        Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
    ):
        await wait_until_flowing(outputs, stream, bridge, 40, "before the unload")
        await asyncio.sleep(BEFORE_S)
        await asyncio.to_thread(reload_config, server, model_config(fraud_models, [1]))
        await wait_for_states(server, {3: "END"})
        held_from = time.time()
        await asyncio.sleep(HOLD_S)
        held_until = time.time()
        await asyncio.to_thread(reload_config, server, with_3)
        await wait_for_states(server, {1: "AVAILABLE", 3: "AVAILABLE"})
        await asyncio.sleep(2.0)  # some traffic after the hold, behind the held events
        sent, records = await finish(stream, outputs, bridge)

    assert_no_failures(outputs, bridge)
    assert_server_never_down(bridge)
    keys = {s.source: s.item.key for s in sent}
    held_keys = {keys[source] for source, r in records.items() if route_of(r) == "3"}
    assert held_keys, "no key was routed to version 3"
    assert len(held_keys) < len(set(keys.values())) / 5, "most keys should be on version 1"
    held = [r for source, r in records.items() if keys[source] in held_keys]
    # The held keys' events sent during the hold were written only after it.
    assert any(r.timestamp_s >= held_until for r in held), "nothing of the held keys waited"
    assert not [r for r in held if held_from + 1.0 < r.timestamp_s < held_until]

    def others_per_s(start: float, end: float) -> float:
        done = [
            r
            for source, r in records.items()
            if keys[source] not in held_keys and start <= r.timestamp_s < end
        ]
        return len(done) / (end - start)

    before = others_per_s(held_from - BEFORE_S, held_from)
    during = others_per_s(held_from, held_until)
    assert during >= 0.9 * before, (before, during)

    # Each key's records in input order, per output topic-partition.
    by_key: defaultdict[tuple[str, int, bytes | None], list[tuple[int, int]]] = defaultdict(list)
    for source, record in records.items():
        by_key[(record.topic, record.partition, keys[source])].append((record.offset, source[1]))
    for where, written in by_key.items():
        offsets = [offset for _, offset in sorted(written)]
        assert offsets == sorted(offsets), f"{where}: written in the order {offsets}"
