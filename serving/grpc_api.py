"""The gRPC front end: PredictionService and ModelService on grpc.aio.

Servicers use the official ``tensorflow_serving.apis`` messages and answer with TF
Serving's codes and messages (``ServingError`` from the lower layers, aborted as
is). Classify, Regress and MultiInference are not implemented (UNIMPLEMENTED).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import grpc
from google.protobuf import message
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import predict
from serving.errors import ServingError
from serving.metrics import Metrics
from serving.tensors import dtype_enum, to_ndarray, to_tensor_proto

log = logging.getLogger(__name__)

# The server accepts what TF Serving accepts: messages up to 2 GB.
MAX_MESSAGE_LENGTH = 2**31 - 1
SIGNATURE_DEF_FIELD = "signature_def"


class Manager(Protocol):
    """What the front ends need of ``manager.ModelManager``."""

    def resolve(self, spec: model_pb2.ModelSpec) -> predict.Version: ...

    def status(
        self, name: str, version: int | None
    ) -> list[get_model_status_pb2.ModelVersionStatus]: ...

    async def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None: ...


def _missing_model_spec() -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def signature_def_map(version: predict.Version) -> get_model_metadata_pb2.SignatureDefMap:
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in version.signature_defs.items():
        signatures.signature_def[key].CopyFrom(signature)
    return signatures


def model_metadata(
    manager: Manager, spec: model_pb2.ModelSpec, fields: list[str]
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata after the ModelSpec check (shared with REST)."""
    if not fields:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        )
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
            )
    version = manager.resolve(spec)
    with version.in_flight():
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        # Upstream answers with the servable's id: name and version, no signature.
        response.model_spec.name = version.name
        response.model_spec.version.value = version.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(version))
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; the other methods answer UNIMPLEMENTED."""

    def __init__(self, manager: Manager, batcher: predict.Batcher | None, metrics: Metrics) -> None:
        self._manager = manager
        self._batcher = batcher
        self._metrics = metrics

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> predict_pb2.PredictResponse:
        start = time.perf_counter()
        name = request.model_spec.name
        try:
            response, runtime = await self._predict(request, context.time_remaining())
        except ServingError as exc:
            self._metrics.record_request(name, exc.code.name)
            await context.abort(exc.code, exc.message)
        self._metrics.record_request(name, "OK")
        self._metrics.record_runtime_latency(name, "Predict", runtime)
        micros = (time.perf_counter() - start) * 1e6
        self._metrics.record_request_latency(name, "Predict", "GRPC", micros)
        return response

    async def _predict(
        self, request: predict_pb2.PredictRequest, remaining: float | None
    ) -> tuple[predict_pb2.PredictResponse, int]:
        if not request.HasField("model_spec"):
            raise _missing_model_spec()
        spec = request.model_spec
        version = self._manager.resolve(spec)
        with version.in_flight():
            signature = predict.find_signature(version, spec.signature_name)
            predict.check_inputs(signature, list(request.inputs))
            inputs = {
                alias: to_ndarray(alias, tensor) for alias, tensor in sorted(request.inputs.items())
            }
            output_keys = predict.check_output_filter(signature, list(request.output_filter))
            call = predict.Call(predict.signature_key(spec.signature_name), inputs, output_keys)
            # The client's remaining deadline becomes TF's run timeout.
            result = await predict.run(version, call, batcher=self._batcher, run_timeout=remaining)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = version.version
            response.model_spec.signature_name = call.signature_key
        for alias in output_keys:
            array = result.outputs[alias]
            response.outputs[alias].CopyFrom(to_tensor_proto(array, dtype_enum(array)))
        return response, result.runtime_micros

    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        try:
            if not request.HasField("model_spec"):
                raise _missing_model_spec()
            return model_metadata(self._manager, request.model_spec, list(request.metadata_field))
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._not_implemented("Classify", request, context)

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await self._not_implemented("Regress", request, context)

    async def MultiInference(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        message_text = _not_implemented_message("MultiInference")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message_text)

    async def _not_implemented(
        self, api: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        try:
            if not request.HasField("model_spec"):
                raise _missing_model_spec()
            classify_or_regress(self._manager, request.model_spec, api)
        except ServingError as exc:
            self._metrics.record_request(request.model_spec.name, exc.code.name)
            await context.abort(exc.code, exc.message)


def _not_implemented_message(api: str) -> str:
    return f"{api} is not implemented by this local TF Serving stand-in; use Predict"


def classify_or_regress(manager: Manager, spec: model_pb2.ModelSpec, api: str) -> None:
    """Classify/Regress up to the point this server stops: always raises.

    The model and signature are checked as upstream does (so a wrong name is still
    NOT_FOUND or INVALID_ARGUMENT), then UNIMPLEMENTED.
    """
    version = manager.resolve(spec)
    with version.in_flight():
        key = predict.signature_key(spec.signature_name)
        if key not in version.signature_defs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"No signature was found with the name: {key}"
            )
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED, _not_implemented_message(api))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager

    async def GetModelStatus(
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> get_model_status_pb2.GetModelStatusResponse:
        try:
            return model_status(self._manager, request)
        except ServingError as exc:
            await context.abort(exc.code, exc.message)

    async def HandleReloadConfigRequest(
        self,
        request: model_management_pb2.ReloadConfigRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> model_management_pb2.ReloadConfigResponse:
        response = model_management_pb2.ReloadConfigResponse()
        error: ServingError | None = None
        if request.config.WhichOneof("config") != "model_config_list":
            error = ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported",
            )
        else:
            for index, model in enumerate(request.config.model_config_list.config):
                log.info(
                    "Config entry index : %d path : %s name : %s platform : %s",
                    *(index, model.base_path, model.name, model.model_platform),
                )
            try:
                await self._manager.reload(request.config)
            except ServingError as exc:
                error = exc
        # The status goes both ways, as upstream: in the response and as the RPC's.
        # (A non-OK RPC carries no response message, so clients see the latter.)
        response.status.SetInParent()
        if error is not None:
            log.error("ReloadConfig failed: %s", error.message)
            response.status.error_code = error.code.value[0]
            response.status.error_message = error.message
            await context.abort(error.code, error.message)
        return response


def model_status(
    manager: Manager, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus (shared with REST): only the version is honoured, a label is not."""
    if not request.HasField("model_spec"):
        raise _missing_model_spec()
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in manager.status(spec.name, version):
        entry = response.model_version_status.add()
        entry.CopyFrom(status)
        entry.status.SetInParent()  # an OK status is still printed, as upstream
    return response


# -- server -----------------------------------------------------------------------

_Handler = Callable[[message.Message, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ThreadLimit(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """``--grpc_max_threads``: calls beyond it are refused like upstream's thread pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = cast(_Handler, handler.unary_unary)

        async def limited(
            request: message.Message, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            if self.active >= self.limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, "Server Threadpool Exhausted"
                )
            self.active += 1
            try:
                return await inner(request, context)
            finally:
                self.active -= 1

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def build_server(
    manager: Manager,
    batcher: predict.Batcher | None,
    metrics: Metrics,
    *,
    max_threads: int,
    health: bool = False,
) -> grpc.aio.Server:
    """A grpc.aio server with both services (not yet bound or started)."""
    server = grpc.aio.server(
        interceptors=[ThreadLimit(max_threads)],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, batcher, metrics), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)
    if health:
        await _add_health(server)
    return server


async def _add_health(server: grpc.aio.Server) -> None:
    """``--enable_grpc_healthcheck_service``: SERVING for "", ModelService, PredictionService.

    The servicer comes from ``grpcio-health-checking``, which the project does not
    declare; without it the flag is logged and ignored.
    """
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError:
        log.warning("--enable_grpc_healthcheck_service needs grpcio-health-checking; ignored")
        return
    servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    # Upstream's service names, as registered with gRPC's health check service.
    for service in ("", "ModelService", "PredictionService"):
        await servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
