"""Routes change under load through the control topic, failing nothing.

The server has ``stable`` -> 1 and ``canary`` -> 2; the bridge follows a control
topic that starts with ``stable=90 canary=10``. Mid-stream the routes go to
``stable=0 canary=100`` and back to ``stable=90 canary=10``; then a record naming
a label the server does not have (``stable=50 nosuch=50``) is rejected and the
previous routes stay. Each phase's events are routed as that phase says, keys
go back to the route they had when the weights come back, and not one event fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from bridge.pipeline.routing import parse_assignments
from tests.integration.kafka_io import Output, Outputs, Sent, make_topics
from tests.integration.procs import Bridges, log_events, wait_for
from tests.versions.conftest import StartServer
from tests.versions.switching import (
    MODEL,
    Stream,
    assert_no_failures,
    assert_server_never_down,
    finish,
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
SPLIT = ["stable=90", "canary=10"]
ALL_CANARY = ["stable=0", "canary=100"]
UNKNOWN_LABEL = ["stable=50", "nosuch=50"]
VERSION_OF_ROUTE = {"stable": 1, "canary": 2}


async def publish(producer: AIOKafkaProducer, topic: str, assignments: list[str]) -> None:
    routes = parse_assignments(MODEL, assignments)
    await producer.send_and_wait(topic, routes.to_json(), key=MODEL.encode())


def logged(bridge: BridgeProcess, event: str, check: Callable[[dict[str, object]], bool]) -> int:
    return sum(1 for entry in log_events(bridge, event) if check(entry))


async def switch(
    producer: AIOKafkaProducer,
    topic: str,
    assignments: list[str],
    bridge: BridgeProcess,
    event: str,
    check: Callable[[dict[str, object]], bool],
) -> float:
    """Publish routes, then wait for the bridge's next ``event`` line passing ``check``;
    returns when it was seen (monotonic): the routes were applied (or rejected) by then.
    """
    seen = logged(bridge, event, check)  # counted before publishing: no race with the bridge
    await publish(producer, topic, assignments)
    what = f"{event} after publishing {' '.join(assignments)}"
    await wait_for(lambda: logged(bridge, event, check) > seen, what, 20.0, bridge.output)
    return time.monotonic()


async def phase(
    outputs: Outputs, stream: Stream, bridge: BridgeProcess, since: float
) -> list[Sent]:
    """Let the stream run under the current routes; its events, each with a record."""
    await asyncio.sleep(2.0)  # the stream runs a while under these routes
    events = stream.after(since)
    await wait_for_outputs(
        outputs, stream, bridge, lambda o: o.covers(events), f"the {len(events)} events of a phase"
    )
    return events


def routes_by_key(records: list[Output]) -> dict[bytes | None, str]:
    """Each key's route; fails if a key took two routes."""
    routes: dict[bytes | None, set[str]] = {}
    for record in records:
        routes.setdefault(record.key, set()).add(route_of(record))
    split = {key: names for key, names in routes.items() if len(names) > 1}
    assert not split, f"keys on two routes under the same routes: {split}"
    return {key: names.pop() for key, names in routes.items()}


async def test_routes_change_under_load_fails_no_event(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
) -> None:
    models_config = write_models_config(
        tmp_path / "models.config",
        model_config(fraud_models, [1, 2], {"stable": 1, "canary": 2}),
    )
    server = await asyncio.to_thread(
        start_server,
        [f"--model_config_file={models_config}", "--allow_version_labels_for_unavailable_models"],
    )
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    control = f"{topic_prefix}-control"
    await create_topics(kafka_bootstrap, [control], partitions=1)

    control_producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await control_producer.start()
    try:
        await publish(control_producer, control, SPLIT)  # what the bridge starts with
        env = bridge_env(
            kafka_bootstrap,
            topics.names,
            server,
            group=topics.group,
            BRIDGE_TOPICS__CONTROL=control,
            BRIDGE_BATCH__MAX_SIZE="8",
            BRIDGE_BATCH__MAX_WAIT_MS="5",
        )
        bridge = await bridges.start_assigned(env)
        applied = [e["routes"] for e in log_events(bridge, "routes_applied")]
        assert applied == ["stable=90 canary=10"], f"routes at start: {applied}"

        async with (
            outputs_for(kafka_bootstrap, topics) as outputs,
            Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
        ):
            start = time.monotonic()
            await wait_for_outputs(
                outputs,
                stream,
                bridge,
                lambda o: {route_of(r) for r in o.results} == {"stable", "canary"},
                "results on both routes (stable=90 canary=10)",
            )
            split = await phase(outputs, stream, bridge, start)

            to_canary = await switch(
                control_producer,
                control,
                ALL_CANARY,
                bridge,
                "routes_applied",
                lambda e: e["routes"] == "stable=0 canary=100",
            )
            canary_only = await phase(outputs, stream, bridge, to_canary)

            back = await switch(
                control_producer,
                control,
                SPLIT,
                bridge,
                "routes_applied",
                lambda e: e["routes"] == "stable=90 canary=10",
            )
            split_again = await phase(outputs, stream, bridge, back)

            rejected = await switch(
                control_producer,
                control,
                UNKNOWN_LABEL,
                bridge,
                "routes_rejected",
                lambda e: "nosuch" in str(e.get("reason")),
            )
            kept = await phase(outputs, stream, bridge, rejected)

            sent, _ = await finish(stream, outputs, bridge)
    finally:
        await control_producer.stop()

    assert_no_failures(outputs, bridge)
    assert_server_never_down(bridge)
    for record in records_for(outputs, sent):
        assert version_of(record) == VERSION_OF_ROUTE[route_of(record)], record.body

    # 90/10: both routes; each key sticks to one route.
    first = records_for(outputs, split)
    assert {route_of(r) for r in first} == {"stable", "canary"}, "both routes at 90/10"
    assigned = routes_by_key(first)

    # 0/100: every event sent after the switch was applied goes to canary.
    routes = {route_of(r) for r in records_for(outputs, canary_only)}
    assert routes == {"canary"}, f"after stable=0 canary=100 was applied: {routes}"
    assert len(canary_only) >= 60, len(canary_only)

    # Back to 90/10: both routes again, and every key on the route it had before.
    again = records_for(outputs, split_again)
    assert {route_of(r) for r in again} == {"stable", "canary"}, "both routes back at 90/10"
    routes_by_key(again)
    moved = {r.key: (assigned[r.key], route_of(r)) for r in again if r.key in assigned}
    moved = {key: pair for key, pair in moved.items() if pair[0] != pair[1]}
    assert not moved, f"keys on another route than at the first 90/10: {moved}"

    # The rejected routes changed nothing: still 90/10, no event on "nosuch".
    rejections = [e for e in log_events(bridge, "routes_rejected") if "nosuch" in str(e)]
    assert rejections, "no routes_rejected line naming nosuch"
    assert rejections[-1].get("routes") == "stable=50 nosuch=50", rejections[-1]
    assert rejections[-1].get("keeping") == "stable=90 canary=10", rejections[-1]
    applied = [e["routes"] for e in log_events(bridge, "routes_applied")]
    assert applied == [
        "stable=90 canary=10",
        "stable=0 canary=100",
        "stable=90 canary=10",
    ], f"routes applied: {applied}"
    still = records_for(outputs, kept)
    assert len(still) >= 60, len(still)
    assert {route_of(r) for r in still} == {"stable", "canary"}, "both routes after the rejection"
    strays = {r.key: route_of(r) for r in still if r.key in assigned}
    strays = {key: route for key, route in strays.items() if route != assigned[key]}
    assert not strays, f"keys moved by rejected routes: {strays}"
