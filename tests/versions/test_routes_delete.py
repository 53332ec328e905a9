"""``bridge routes set`` then ``bridge routes delete``, followed by two replicas at once.

Two bridges share the input's partitions (one consumer group) and follow the same
control topic; their settings route everything to ``stable`` (version 1). ``routes
set fraud canary=100`` moves both to ``canary`` (version 2); ``routes delete fraud``
writes the tombstone and both go back to their settings' ``stable``. Each phase's
events, on every partition whichever replica owns it, are served as that phase says,
and every event ends as exactly one result.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridge.ops import commands
from tests.integration.kafka_io import Sent, make_topics
from tests.integration.procs import Bridges, assigned, log_events, stopped_counts, wait_for
from tests.versions.conftest import StartServer
from tests.versions.switching import (
    Stream,
    assert_no_failures,
    model_config,
    outputs_for,
    records_for,
    route_of,
    version_of,
    wait_for_outputs,
    write_models_config,
)
from tools.harness.processes import BridgeProcess, bridge_env, create_topics

pytestmark = pytest.mark.integration

RATE_PER_S = 60.0
PARTITIONS = 4


def applied(bridge: BridgeProcess, routes: str) -> int:
    return sum(1 for e in log_events(bridge, "routes_applied") if e.get("routes") == routes)


async def command(*argv: str) -> int:
    """An operator's command, run as ``bridge routes ...`` runs it (its own event loop)."""
    return await asyncio.to_thread(commands.main, list(argv))


async def both_apply(replicas: list[BridgeProcess], routes: str, *argv: str) -> float:
    """Run the command; wait until every replica applied ``routes`` once more than before.

    Returns when the last one did (monotonic): events sent after it see the new routes.
    """
    before = [applied(bridge, routes) for bridge in replicas]
    assert await command(*argv) == 0, f"bridge {' '.join(argv)} failed"
    await wait_for(
        lambda: all(applied(b, routes) > n for b, n in zip(replicas, before, strict=True)),
        f"every replica to apply {routes} after `bridge {' '.join(argv)}`",
        30,
        lambda: "\n".join(bridge.output()[-3000:] for bridge in replicas),
    )
    return time.monotonic()


def served_as(records_of: list[Sent], outputs: object, routes: set[str], version: int) -> None:
    """Every one of these events got a result on ``routes`` from ``version``."""
    records = records_for(outputs, records_of)  # type: ignore[arg-type]
    assert len(records) == len(records_of)
    wrong = [(r.source, route_of(r), version_of(r)) for r in records]
    wrong = [w for w in wrong if w[1] not in routes or w[2] != version]
    assert not wrong, f"events not served by {routes} / version {version}: {wrong[:10]}"


async def test_routes_delete_sends_every_replica_back_to_its_settings(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models_config = write_models_config(
        tmp_path / "models.config",
        model_config(fraud_models, [1, 2], {"stable": 1, "canary": 2}),
    )
    server = await asyncio.to_thread(
        start_server,
        [f"--model_config_file={models_config}", "--allow_version_labels_for_unavailable_models"],
    )
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=PARTITIONS)
    control = f"{topic_prefix}-control"
    await create_topics(kafka_bootstrap, [control], partitions=1)
    # The operator's shell: the same settings the bridges have.
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("BRIDGE_TOPICS__CONTROL", control)
    monkeypatch.setenv("BRIDGE_SERVING__GRPC_TARGET", server.grpc_target)

    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_TOPICS__CONTROL=control,
        BRIDGE_MODEL__ROUTES='{"stable": 100}',
        BRIDGE_BATCH__MAX_SIZE="8",
    )
    one = await bridges.start_assigned(env, "one")
    two = bridges.start(env, "two")
    replicas = [one, two]
    everything = set(range(PARTITIONS))

    def split() -> bool:
        a, b = assigned(one) or set(), assigned(two) or set()
        return bool(a) and bool(b) and not (a & b) and (a | b) == everything

    await wait_for(split, "both replicas to own partitions", 90, lambda: two.output()[-3000:])
    assert all(applied(bridge, "stable=100") == 1 for bridge in replicas)

    async with (
        outputs_for(kafka_bootstrap, topics) as outputs,
        Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
    ):

        async def phase(since: float, what: str) -> list[Sent]:
            await asyncio.sleep(2.0)  # the stream runs a while under these routes
            events = stream.after(since)
            await wait_for_outputs(outputs, stream, one, lambda o: o.covers(events), what)
            assert {s.partition for s in events} == everything, "every replica's partitions"
            return events

        settings_routes = await phase(0.0, "results under the settings' routes")
        to_canary = await both_apply(replicas, "canary=100", "routes", "set", "fraud", "canary=100")
        on_canary = await phase(to_canary, "results after routes set")
        deleted = await both_apply(replicas, "stable=100", "routes", "delete", "fraud")
        back = await phase(deleted, "results after routes delete")
        sent = await stream.stop()
        await outputs.wait_until(lambda o: o.covers(sent), "a record for every event", 45)

    for bridge in replicas:
        assert await asyncio.to_thread(bridge.stop) == 0, bridge.output()
        assert [e["model"] for e in log_events(bridge, "routes_deleted")] == ["fraud"]
    assert_no_failures(outputs, one)
    served_as(settings_routes, outputs, {"stable"}, 1)
    served_as(on_canary, outputs, {"canary"}, 2)
    served_as(back, outputs, {"stable"}, 1)
    by_source = outputs.by_source()
    assert {s.source for s in sent} == set(by_source)
    assert all(len(records) == 1 for records in by_source.values()), "exactly one record each"
    written = sum(int(stopped_counts(b)["results"]) for b in replicas)
    assert written == len(sent)
