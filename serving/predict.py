"""Predict, shared by the gRPC and REST front ends: validation, then the run.

The checks and their order follow TF Serving's ``predict_util.cc``: signature
lookup, input set, each input's tensor, output filter. The run goes through the
batcher when one is configured and the request's tensor signature is one it
batches, else straight to the version in a worker thread. Callers resolve the
version and enter ``version.in_flight()`` before calling anything here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import ServingError

DEFAULT_SIGNATURE = "serving_default"


class Version(Protocol):
    """What Predict needs of a loaded version (``servable.LoadedVersion``)."""

    name: str
    version: int

    @property
    def signature_defs(self) -> Mapping[str, meta_graph_pb2.SignatureDef]: ...

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
    ) -> dict[str, np.ndarray]: ...

    def in_flight(self) -> contextlib.AbstractContextManager[None]: ...


@dataclass(frozen=True)
class Call:
    """One validated Predict: what to run and which outputs to return, in order."""

    signature_key: str
    inputs: dict[str, np.ndarray]
    output_keys: tuple[str, ...]


def signature_key(name: str) -> str:
    return name or DEFAULT_SIGNATURE


def find_signature(
    version: Version, name: str, *, rest: bool = False
) -> meta_graph_pb2.SignatureDef:
    """The named signature ("" = serving_default), with each API's own error."""
    key = signature_key(name)
    try:
        return version.signature_defs[key]
    except KeyError:
        if rest:  # the REST handler looks the signature up itself, before Predict
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'Serving signature name: "{key}" not found in signature def',
            ) from None
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
        ) from None


def _braced(names: set[str] | Sequence[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def check_inputs(signature: meta_graph_pb2.SignatureDef, names: Sequence[str]) -> None:
    """Extra inputs are rejected; missing ones only pass when the signature has defaults."""
    sent = set(names)
    expected = set(signature.inputs)
    extra = sent - expected
    missing = expected - sent
    if extra or (missing - set(signature.defaults)):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({_braced(sent)}) != len({_braced(expected)}). "
            f"Sent extra: {_braced(extra)}. Missing but required: {_braced(missing)}.",
        )


def check_output_filter(
    signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]
) -> tuple[str, ...]:
    """Output aliases to fetch: the filter in its order, or every output when empty."""
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {_braced(set(signature.outputs))}.",
            )
        if alias in seen:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}"
            )
        seen.add(alias)
    return tuple(output_filter) if output_filter else tuple(sorted(signature.outputs))


def input_dtypes(signature: meta_graph_pb2.SignatureDef) -> dict[str, int]:
    """Input alias -> DataType enum, which drives REST JSON parsing."""
    return {alias: info.dtype for alias, info in signature.inputs.items()}


class Batcher(Protocol):
    """The part of ``batching.Batcher`` Predict uses (a seam for tests)."""

    def accepts(self, version: Version, call: Call) -> bool: ...

    async def run(
        self, version: Version, call: Call, deadline: float | None
    ) -> dict[str, np.ndarray]: ...


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    runtime_micros: int


def _timed_run(version: Version, call: Call) -> RunResult:
    start = time.perf_counter()
    outputs = version.run(call.signature_key, call.inputs, call.output_keys)
    return RunResult(outputs, int((time.perf_counter() - start) * 1e6))


async def run(
    version: Version,
    call: Call,
    *,
    batcher: Batcher | None = None,
    run_timeout: float | None = None,
) -> RunResult:
    """Run a validated call; ``run_timeout`` (seconds) plays RunOptions.timeout_in_ms."""
    timeout = run_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    if batcher is not None and batcher.accepts(version, call):
        start = time.perf_counter()
        outputs = await batcher.run(version, call, deadline)
        return RunResult(outputs, int((time.perf_counter() - start) * 1e6))
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, _timed_run, version, call)
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        _hold_until_done(version, future)
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
    except asyncio.CancelledError:
        _hold_until_done(version, future)
        raise


def _hold_until_done(version: Version, future: asyncio.Future[RunResult]) -> None:
    """TensorFlow cannot be interrupted: keep the version loaded until its thread ends.

    The caller stops waiting (deadline, disconnect) and leaves its ``in_flight()``;
    this second hold, taken while the first is still held, ends with the run.
    """
    if future.done():
        if not future.cancelled():
            future.exception()  # consumed: nobody is left to report it to
        return
    held = version.in_flight()
    held.__enter__()

    def release(done: asyncio.Future[RunResult]) -> None:
        held.__exit__(None, None, None)
        if not done.cancelled():
            done.exception()

    future.add_done_callback(release)
