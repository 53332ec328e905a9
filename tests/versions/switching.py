"""Helpers for the version-switch tests: a steady stream of payments, the server's
ModelService (status and reload), and the end-of-test checks.

A switch is proven under load: a background task keeps producing valid, keyed
payments at a steady rate while the switch happens; then production stops, every
produced event must end as exactly one output record, and (unless a test expects
failures) none of them on the failures topic.

Each produced event remembers when its send *began* (monotonic clock). An event
whose send began after a switch completed cannot have been fetched by the bridge
before it, so its record must reflect the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import grpc
from aiokafka import AIOKafkaProducer
from google.protobuf import text_format

from bridge.wire import (
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_server_config_pb2,
    model_service_pb2_grpc,
)
from tests.integration.kafka_io import (
    BRIDGE,
    CONNECT,
    Item,
    Output,
    Outputs,
    Sent,
    SourceKey,
    Topics,
)
from tests.integration.procs import log_events, stopped_counts
from tools.harness.payments import payments
from tools.harness.processes import BridgeProcess, ModelServer

MODEL = "fraud"
STATE_NAMES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


# -- the stream --------------------------------------------------------------------------


class Stream:
    """Produces valid keyed payments at ``rate_per_s`` until ``stop()``; acks=all.

    ``sent`` grows as sends are acknowledged; ``began[source]`` is the monotonic
    time the send of that event began.
    """

    def __init__(
        self, bootstrap: str, topic: str, rate_per_s: float = 50.0, seed: int = 11
    ) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self._topic = topic
        self._rate = rate_per_s
        self._seed = seed
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent: list[Sent] = []
        self.began: dict[SourceKey, float] = {}

    async def __aenter__(self) -> Stream:
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name="payment-stream")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._producer.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        events = payments(10**9, seed=self._seed)  # a generator: made as needed
        chunk = max(1, round(self._rate / 10))  # ten sends a second
        started, produced = loop.time(), 0
        while not self._stopping.is_set():
            due = started + produced / self._rate
            with contextlib.suppress(TimeoutError):
                # Pacing the stream, not synchronising with anything.
                await asyncio.wait_for(self._stopping.wait(), max(0.0, due - loop.time()))
            if self._stopping.is_set():
                break
            batch = [next(events) for _ in range(chunk)]
            began = time.monotonic()
            futures = [await self._producer.send(self._topic, p.value, key=p.key) for p in batch]
            for p, future in zip(batch, futures, strict=True):
                metadata = await future
                sent = Sent(metadata.partition, metadata.offset, Item(p.key, p.value, (), "result"))
                self.began[sent.source] = began
                self.sent.append(sent)
            produced += len(batch)

    async def stop(self) -> list[Sent]:
        """Stop producing (a send in progress completes); every event produced."""
        self._stopping.set()
        assert self._task is not None
        await self._task  # re-raises a producer error
        return list(self.sent)

    def check(self) -> None:
        """Fail at once if the producing task died."""
        if self._task is not None and self._task.done() and not self._stopping.is_set():
            self._task.result()

    def after(self, moment: float) -> list[Sent]:
        """Events whose send began after ``moment`` (time.monotonic())."""
        return [s for s in self.sent if self.began[s.source] > moment]


# -- reading the outputs ---------------------------------------------------------------------


def version_of(record: Output) -> int | None:
    assert record.body is not None
    version: int | None = record.body["model"]["version"]
    return version


def route_of(record: Output) -> str:
    assert record.body is not None
    route: str = record.body["model"]["route"]
    return route


def records_for(outputs: Outputs, sent: Iterable[Sent]) -> list[Output]:
    """The output records of these events (in the order the events were sent)."""
    by_source = outputs.by_source()
    return [record for s in sent for record in by_source.get(s.source, [])]


def describe_failure(record: Output) -> str:
    headers = {
        name: value.decode(errors="replace")
        for name, value in record.headers
        if name.startswith((CONNECT, BRIDGE))
    }
    return f"source {record.source}: {headers}"


def describe_failures(outputs: Outputs, limit: int = 10) -> str:
    failures = outputs.failures
    lines = [describe_failure(record) for record in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"... and {len(failures) - limit} more")
    return "\n".join(lines)


def assert_no_failures(outputs: Outputs, bridge: BridgeProcess) -> None:
    failures = outputs.failures
    assert not failures, (
        f"{len(failures)} event(s) failed during the switch:\n{describe_failures(outputs)}\n"
        f"bridge log tail:\n{bridge.output()[-3000:]}"
    )


async def wait_for_outputs(
    outputs: Outputs,
    stream: Stream,
    bridge: BridgeProcess,
    done: Callable[[Outputs], bool],
    what: str,
    timeout_s: float = 30.0,
) -> None:
    """Poll the outputs until ``done(outputs)``; bounded, and fails fast if a part died."""

    def check(o: Outputs) -> bool:
        stream.check()
        if bridge.process is not None and bridge.process.poll() is not None:
            raise AssertionError(f"the bridge exited:\n{bridge.output()}")
        return done(o)

    await outputs.wait_until(check, what, timeout_s, bridge.output)


async def wait_until_flowing(
    outputs: Outputs, stream: Stream, bridge: BridgeProcess, records: int, before: str
) -> list[Sent]:
    """The steady state a switch starts from: ``records`` outputs, then every event sent
    so far accounted for. Returns those events (the ones sent ``before`` the switch)."""
    await wait_for_outputs(
        outputs, stream, bridge, lambda o: len(o.records) >= records, f"{records} records {before}"
    )
    sent = list(stream.sent)
    await wait_for_outputs(
        outputs, stream, bridge, lambda o: o.covers(sent), f"every event sent {before}"
    )
    return sent


async def finish(
    stream: Stream, outputs: Outputs, bridge: BridgeProcess, timeout_s: float = 45.0
) -> tuple[list[Sent], dict[SourceKey, Output]]:
    """Stop producing; wait until every event has a record; stop the bridge (SIGTERM);
    check that each event has exactly one record and nothing else was written.

    Returns the events and each one's record.
    """
    sent = await stream.stop()
    await outputs.wait_until(
        lambda o: o.covers(sent),
        f"a record for each of the {len(sent)} events produced",
        timeout_s,
        lambda: f"{describe_failures(outputs)}\n{bridge.output()}",
    )
    code = await asyncio.to_thread(bridge.stop)
    assert code == 0, f"SIGTERM should exit 0, got {code}:\n{bridge.output()}"
    stopped = stopped_counts(bridge)
    # Everything the bridge says it wrote, then one more look for anything beyond it.
    await outputs.wait_for_count(stopped["results"] + stopped["failures"])

    by_source = outputs.by_source()
    inputs = {s.source for s in sent}
    assert set(by_source) == inputs, (
        f"records for unknown inputs: {sorted(set(by_source) - inputs)[:10]}, "
        f"inputs without a record: {sorted(inputs - set(by_source))[:10]}"
    )
    extra = {source: len(records) for source, records in by_source.items() if len(records) != 1}
    assert not extra, f"events with more than one record (source -> count): {extra}"
    assert stopped["events"] == len(sent), stopped
    assert stopped["results"] + stopped["failures"] == len(sent), stopped
    return sent, {source: records[0] for source, records in by_source.items()}


def assert_server_never_down(bridge: BridgeProcess) -> None:
    """The bridge never paused for an outage, nor saw the server as down."""
    outage_pauses = [e for e in log_events(bridge, "paused") if e.get("server_up") is False]
    down = log_events(bridge, "model_server_down")
    assert not outage_pauses and not down, (
        f"the bridge paused for an outage while the server was up: {outage_pauses + down}"
    )


# -- the model server ------------------------------------------------------------------------


def model_config(
    base_path: Path, versions: Sequence[int], labels: Mapping[str, int] | None = None
) -> model_server_config_pb2.ModelServerConfig:
    """A one-model config: policy ``specific {versions}`` and these labels."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = MODEL
    entry.base_path = str(base_path)
    entry.model_platform = "tensorflow"
    entry.model_version_policy.specific.versions.extend(versions)
    for label, version in (labels or {}).items():
        entry.version_labels[label] = version
    return config


def write_models_config(path: Path, config: model_server_config_pb2.ModelServerConfig) -> Path:
    path.write_text(text_format.MessageToString(config))
    return path


def read_models_config(path: Path) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())


def _stub(server: ModelServer) -> tuple[grpc.Channel, model_service_pb2_grpc.ModelServiceStub]:
    channel = grpc.insecure_channel(server.grpc_target)
    return channel, model_service_pb2_grpc.ModelServiceStub(channel)


def reload_config(
    server: ModelServer, config: model_server_config_pb2.ModelServerConfig, timeout_s: float = 30
) -> None:
    """HandleReloadConfigRequest; raises if the server refuses the config."""
    channel, stub = _stub(server)
    with channel:
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=timeout_s
        )
    assert response.status.error_code == 0, response.status


def version_states(server: ModelServer) -> dict[int, str]:
    """GetModelStatus: version -> state name (START ... END)."""
    channel, stub = _stub(server)
    with channel:
        response = stub.GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=MODEL)),
            timeout=5,
        )
    return {
        status.version: STATE_NAMES.get(status.state, str(status.state))
        for status in response.model_version_status
    }


async def wait_for_states(
    server: ModelServer, wanted: Mapping[int, str], timeout_s: float = 30.0
) -> dict[int, str]:
    """Poll GetModelStatus until each version in ``wanted`` is in its state."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = await asyncio.to_thread(version_states, server)
        if all(states.get(v) == state for v, state in wanted.items()):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(
                f"model server states {states}, wanted {dict(wanted)} within {timeout_s} s\n"
                f"{server.output()}"
            )
        await asyncio.sleep(0.1)


def outputs_for(bootstrap: str, topics: Topics) -> Outputs:
    """A reader of the test's results and failures topics, from the beginning."""
    return Outputs(
        bootstrap,
        (topics.results, topics.results_partitions),
        (topics.failures, topics.failures_partitions),
    )
