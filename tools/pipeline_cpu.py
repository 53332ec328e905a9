"""The bridge's own CPU per event, without sockets: for profiling, not a test.

``Service`` runs on the unit tests' fake consumer and producer, and a model client
that does what the gRPC client does on the bridge's side of the wire (encode the
request, serialize it, parse a response of the demo model's shape, split it back)
without a server. What is left is the bridge's own work per event: intake, batching,
the ledger, result JSON and the producer's record batches.

    .venv/bin/python -m tools.pipeline_cpu [--events N] [--batch 64]
    py-spy record -o prof.svg -- .venv/bin/python -m tools.pipeline_cpu

``make bench`` is the measure that counts (real broker, real model server); this
one is steadier and takes seconds, for trying a change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder

from bridge.cli import GC_YOUNG_THRESHOLD
from bridge.domain import Instance, Prediction, Signature, Target
from bridge.kafka.records import RecordBuilder
from bridge.lanes import Lanes
from bridge.logs import configure_logging
from bridge.metrics import Metrics
from bridge.outputs import Counts
from bridge.service import Service
from bridge.serving.grpc_client import predict_request, prediction_of
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy
from bridge.settings import Settings
from bridge.switching import RouteSwitch
from bridge.wire import predict_pb2, tensor_pb2, types_pb2
from tests.bridge.fake_kafka import FakeConsumer, FakeRecord, FakeSalvager
from tests.bridge.signatures import FRAUD
from tools.harness.payments import payments

PARTITIONS = 3
DISTINCT = 3000  # payments made; more events repeat them


class _CountingProducer:
    """Builds each batch as aiokafka would send it, counts its records, acks at once."""

    def __init__(self) -> None:
        self.records = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(512 * 1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.records += batch.record_count()
        batch._build()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        return None


class _WireOnlyClient:
    """The gRPC client's CPU on the bridge's side: request built and serialized, reply parsed."""

    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        predict_request(target, signature, instances).SerializeToString()
        response = predict_pb2.PredictResponse.FromString(_reply(len(instances)))
        return prediction_of(response, len(instances))

    async def get_signature(self, target: Target) -> Signature:
        return self.signature

    async def is_ready(self, target: Target) -> bool:
        return True

    async def aclose(self) -> None:
        return None


_REPLIES: dict[int, bytes] = {}


def _reply(count: int) -> bytes:
    if count not in _REPLIES:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "fraud"
        response.model_spec.version.value = 2
        probability = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        probability.tensor_shape.dim.add(size=count)
        probability.float_val.extend(0.01 * (i % 100) for i in range(count))
        flagged = tensor_pb2.TensorProto(dtype=types_pb2.DT_BOOL)
        flagged.tensor_shape.dim.add(size=count)
        flagged.bool_val.extend(i % 7 == 0 for i in range(count))
        response.outputs["fraud_probability"].CopyFrom(probability)
        response.outputs["flagged"].CopyFrom(flagged)
        _REPLIES[count] = response.SerializeToString()
    return _REPLIES[count]


async def _run(events: int, batch: int) -> tuple[float, int]:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        topics={"input": "in", "results": "out", "failures": "dlq"},
        model={"name": "fraud", "copy_fields": ["id"]},
        batch={"max_size": batch, "max_wait_ms": 5},
        delivery={"commit_interval_ms": 200},
    )
    client = _WireOnlyClient(FRAUD)
    consumer = FakeConsumer()
    # A fixed set of payments, repeated: making them costs the same for any ``events``,
    # so an instruction count's difference between two sizes is the bridge's alone.
    made = list(payments(min(events, DISTINCT), seed=11))
    for index in range(events):
        paid = made[index % len(made)]
        tp = TopicPartition("in", index % PARTITIONS)
        log = consumer.logs.setdefault(tp, [])
        log.append(FakeRecord("in", tp.partition, len(log), key=paid.key, value=paid.value))
    consumer.assign_more(*consumer.logs)
    producer = _CountingProducer()
    health = ServerHealth(lambda: client.is_ready(Target("fraud")), 1.0, 5.0)
    lanes = Lanes(client, settings, health.hold_if_down)
    fatal: list[BaseException] = []
    service = Service(
        settings,
        consumer,
        producer,
        FakeSalvager([]),  # type: ignore[arg-type]
        RecordBuilder("out", "dlq", {"out": PARTITIONS, "dlq": PARTITIONS}, "grpc"),
        client,
        Predictor(client, health, RetryPolicy(3, 0.01, 0.1)),
        health,
        lanes,
        Metrics(),
        Counts(),
        fatal.append,
    )
    stop = asyncio.Event()
    await RouteSwitch(settings, lanes, stop).open_settings_routes()
    gc.collect()
    gc.freeze()  # as bridge.cli does after start-up: the input log is not the bridge's heap
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)  # as bridge.cli sets it
    gc_spent = [0.0, 0.0, 0.0]
    gc_began = [0.0]
    gc_count = [0, 0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            gc_spent[info["generation"]] += time.perf_counter() - gc_began[0]
            gc_count[info["generation"]] += 1

    gc.callbacks.append(on_gc)
    started = time.process_time()
    running = asyncio.create_task(service.run(stop, lambda task: None, []))
    while producer.records < events and not fatal and not running.done():  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    spent = time.process_time() - started
    gc.callbacks.remove(on_gc)
    print(
        f"  {spent / max(producer.records, 1) * 1e6:.1f} us/event; of it in the collector "
        f"{sum(gc_spent) * 1e6 / max(events, 1):.2f} us ({gc_count} collections by generation)"
    )
    stop.set()
    await asyncio.wait_for(running, 10)
    if fatal:
        raise fatal[0]
    return spent, producer.records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="fresh pipelines; min and median shown")
    args = parser.parse_args()
    configure_logging("warning", "json")
    per_event = []
    for _ in range(args.runs):
        spent, produced = asyncio.run(_run(args.events, args.batch))
        per_event.append(spent / max(produced, 1) * 1e6)
    per_event.sort()
    print(
        f"{args.events:,} events x {args.runs} runs, batch {args.batch}: "
        f"min {per_event[0]:.1f}, median {per_event[len(per_event) // 2]:.1f} us/event "
        "(the bridge's own work, no sockets)"
    )


if __name__ == "__main__":
    main()
