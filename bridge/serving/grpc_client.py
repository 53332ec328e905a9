"""``ModelClient`` over TF Serving's gRPC API, on the one channel of ``grpc_channel``.

PredictionService carries the bridge's calls (Predict, GetModelMetadata); the
probe asks ModelService's GetModelStatus (``model_service``), on the same channel.
Errors are translated by ``GrpcChannel.call``, and only there. A probe on a
channel that is not connected first asks it to connect, so ``is_ready`` is True
within about one reconnect interval of the server being back, and ``predict``
then goes out on a connected channel.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.domain import (
    Instance,
    Prediction,
    Signature,
    Target,
    TensorSpec,
    UnsupportedSignatureError,
    dtype_from_number,
)
from bridge.errors import ModelCallError, ModelNotFoundError, RejectedInputError
from bridge.serving.grpc_channel import PROBE_CONNECT_WAIT_S, GrpcChannel
from bridge.serving.model_service import ModelServiceClient
from bridge.serving.tensors import decode_tensor, encode_inputs, split_outputs
from bridge.serving.tls import ServingTls
from bridge.tracing import outgoing
from bridge.wire import get_model_metadata_pb2, meta_graph_pb2, model_pb2, predict_pb2

__all__ = [
    "PROBE_CONNECT_WAIT_S",
    "GrpcModelClient",
    "predict_request",
    "prediction_of",
    "signature_from_def",
]

_SIGNATURE_DEF_MAP = "tensorflow.serving.SignatureDefMap"


class GrpcModelClient:
    def __init__(
        self, target: str, timeout_s: float, max_message_bytes: int, tls: ServingTls | None = None
    ) -> None:
        self._channel = GrpcChannel(target, timeout_s, max_message_bytes, tls)
        self.model_service = ModelServiceClient(self._channel)

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        response = await self._channel.call(
            self._channel.predictions.Predict,
            predict_request(target, signature, instances),
            metadata=outgoing(),
        )
        return prediction_of(response, len(instances))

    async def _metadata(self, target: Target) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(target), metadata_field=["signature_def"]
        )
        return await self._channel.call(self._channel.predictions.GetModelMetadata, request)

    async def served_version(self, target: Target) -> int | None:
        """The version the server resolves ``target`` to (a label's, say), as it says."""
        spec = (await self._metadata(target)).model_spec
        return spec.version.value if spec.HasField("version") else None

    async def get_signature(self, target: Target) -> Signature:
        response = await self._metadata(target)
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
        await self._channel.connect(min(PROBE_CONNECT_WAIT_S, self._channel.timeout_s))
        try:
            versions = await self.model_service.status(target.model, target.version)
        except ModelNotFoundError:
            return True  # an answer: the server is up, the model is just not there
        except ModelCallError:
            return False
        return any(status.available for status in versions)

    async def aclose(self) -> None:
        await self._channel.close()


def predict_request(
    target: Target, signature: Signature, instances: Sequence[Instance]
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=_model_spec(target))
    for name, tensor in encode_inputs(signature, instances).items():
        request.inputs[name].CopyFrom(tensor)
    return request


def prediction_of(response: predict_pb2.PredictResponse, count: int) -> Prediction:
    """A Predict response split back into ``count`` instances' outputs."""
    outputs = {name: decode_tensor(tensor) for name, tensor in response.outputs.items()}
    version = response.model_spec.version.value if response.model_spec.HasField("version") else None
    return Prediction(version, split_outputs(outputs, count))


def _model_spec(target: Target) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=target.model, signature_name=target.signature)
    if target.label is not None:
        spec.version_label = target.label
    elif target.version is not None:
        spec.version.value = target.version
    return spec


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
