"""``ModelClient`` over TF Serving's gRPC API (``grpc.aio``, one channel).

gRPC's own retries are off (the pipeline retries with backoff, so attempts do not
multiply), every call has a deadline, and the message size limits are raised
from gRPC's 4 MB default. ``AioRpcError`` is translated here, and only here.

When to reconnect after an outage is the bridge's call, not gRPC's. With gRPC's
default connection backoff (1 s x 1.6 per failure, up to 120 s), a channel refused
for 30 s next tries to connect up to ~10 s after the server is back, and until
then every call fails at once. The probe's short backoff did not help: is_ready
took 6-11 s after 30-60 s outages. The sidecar is on loopback, where a refused
connect costs nothing, so the channel retries at least once a second. A probe on
a channel that is not connected asks it to connect and waits, up to a bound, before
it calls. So ``is_ready`` is True within about one reconnect interval of the server
being back, and ``predict`` then goes out on a connected channel (tests/bridge/
test_grpc_channel.py, tests/integration/test_resume.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import grpc.aio

from bridge.domain import (
    Instance,
    Prediction,
    Signature,
    Target,
    TensorSpec,
    UnsupportedSignatureError,
    dtype_from_number,
)
from bridge.errors import ModelCallError, RejectedInputError, error_for_grpc_status
from bridge.serving.tensors import decode_tensor, encode_inputs, split_outputs
from bridge.wire import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    meta_graph_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

_SIGNATURE_DEF_MAP = "tensorflow.serving.SignatureDefMap"
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE

# Connection backoff on loopback: first retry after 0.5 s, then at most every 1 s
# (gRPC adds +-20% jitter). The connect timeout (grpc.min_reconnect_backoff_ms,
# 20 s) stays: a refused connect fails at once anyway, and a slow handshake with a
# server that is starting is not cut short and retried.
RECONNECT_INITIAL_MS = 500
RECONNECT_MAX_MS = 1_000
# How long a probe waits for a channel that is not connected to connect: longer
# than one reconnect interval (with jitter), so a waiting probe sees an attempt.
PROBE_CONNECT_WAIT_S = 1.5
_CONNECT_POLL_S = 0.02


class GrpcModelClient:
    def __init__(self, target: str, timeout_s: float, max_message_bytes: int) -> None:
        self._timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.enable_retries", 0),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # Notice a dead sidecar on an idle channel without waiting for TCP.
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            ],
        )
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        request = predict_pb2.PredictRequest(model_spec=_model_spec(target))
        for name, tensor in encode_inputs(signature, instances).items():
            request.inputs[name].CopyFrom(tensor)
        try:
            response = await self._predictions.Predict(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        outputs = {name: decode_tensor(tensor) for name, tensor in response.outputs.items()}
        version = (
            response.model_spec.version.value if response.model_spec.HasField("version") else None
        )
        return Prediction(version, split_outputs(outputs, len(instances)))

    async def get_signature(self, target: Target) -> Signature:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(target), metadata_field=["signature_def"]
        )
        try:
            response = await self._predictions.GetModelMetadata(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        packed = response.metadata["signature_def"]
        if not packed.type_url.endswith("/" + _SIGNATURE_DEF_MAP):
            raise UnsupportedSignatureError(
                f"metadata holds {packed.type_url}, not a SignatureDefMap"
            )
        signature_map = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value)
        if target.signature not in signature_map.signature_def:
            known = ", ".join(sorted(signature_map.signature_def))
            raise RejectedInputError(
                f"model {target} has no signature {target.signature!r} (it has: {known})",
                grpc_status="FAILED_PRECONDITION",
            )
        return signature_from_def(
            target.model,
            response.model_spec.version.value if response.model_spec.HasField("version") else None,
            target.signature,
            signature_map.signature_def[target.signature],
        )

    async def is_ready(self, target: Target) -> bool:
        spec = model_pb2.ModelSpec(name=target.model)
        if target.version is not None:
            spec.version.value = target.version
        await self._connect(min(PROBE_CONNECT_WAIT_S, self._timeout_s))
        try:
            response = await self._models.GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND is an answer: the server is up, the model is just not there.
            return exc.code() == grpc.StatusCode.NOT_FOUND
        return any(status.state == _AVAILABLE for status in response.model_version_status)

    async def aclose(self) -> None:
        await self._channel.close(grace=None)

    async def _connect(self, within_s: float) -> bool:
        """Ask the channel to connect now and wait up to ``within_s`` for it; True if READY.

        A call that is not ``wait_for_ready`` fails at once while the channel waits
        out its backoff, so without this a probe would only see the server back if
        it happened to come right after one of gRPC's own attempts. Polling the
        state (cheap, no RPC) leaves no connectivity watch behind when it gives up.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self._channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_CONNECT_POLL_S)
        return True


def _model_spec(target: Target) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=target.model, signature_name=target.signature)
    if target.label is not None:
        spec.version_label = target.label
    elif target.version is not None:
        spec.version.value = target.version
    return spec


def _translate(exc: grpc.aio.AioRpcError) -> ModelCallError:
    return error_for_grpc_status(exc.code().name, exc.details() or exc.code().name)


def signature_from_def(
    model: str, version: int | None, name: str, signature_def: meta_graph_pb2.SignatureDef
) -> Signature:
    def spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape = (
            None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        )
        return TensorSpec(dtype_from_number(info.dtype), shape)

    return Signature(
        model=model,
        version=version,
        name=name,
        inputs={k: spec(v) for k, v in sorted(signature_def.inputs.items())},
        outputs={k: spec(v) for k, v in sorted(signature_def.outputs.items())},
    )
