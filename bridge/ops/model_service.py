"""TF Serving's ModelService over gRPC: GetModelStatus and HandleReloadConfigRequest.

The same API on a real ``tensorflow/serving`` and on ``python -m serving``.
``grpc.aio.AioRpcError`` is translated here into ``ServerCallError``, whose
message is the server's.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import grpc
import grpc.aio

from bridge.wire import (
    error_codes_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_server_config_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

_State = get_model_status_pb2.ModelVersionStatus.State


class ServerCallError(Exception):
    """A ModelService call failed; ``code`` is the gRPC status name, the message the server's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str  # OK unless a load failed
    error_message: str

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"

    @property
    def failed(self) -> bool:
        return self.state == "END" and self.error_code != "OK"


def _code_name(code: int) -> str:
    try:
        return error_codes_pb2.Code.Name(code)  # type: ignore[arg-type]
    except ValueError:
        return str(code)


def _state_name(state: int) -> str:
    try:
        return _State.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


class ModelService:
    """One channel to a model server's ModelService; every call has a deadline.

    ``label_version`` asks the PredictionService (GetModelMetadata echoes the
    version a label resolves to); there is no other way to read a label back.
    """

    def __init__(self, target: str, timeout_s: float) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target, options=[("grpc.enable_retries", 0)])
        self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    async def __aenter__(self) -> ModelService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._channel.close(grace=None)

    async def status(self, model: str, timeout_s: float | None = None) -> list[VersionStatus]:
        """Every version the server tracks for ``model``, highest first."""
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=model)
        )
        try:
            response = await self._stub.GetModelStatus(request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        versions = [
            VersionStatus(
                version=status.version,
                state=_state_name(status.state),
                error_code=_code_name(status.status.error_code),
                error_message=status.status.error_message,
            )
            for status in response.model_version_status
        ]
        return sorted(versions, key=lambda status: status.version, reverse=True)

    async def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """HandleReloadConfigRequest: ``config`` replaces the server's whole model list."""
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        try:
            response = await self._stub.HandleReloadConfigRequest(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        if response.status.error_code != error_codes_pb2.OK:
            raise ServerCallError(
                _code_name(response.status.error_code), response.status.error_message
            )

    async def label_version(self, model: str, label: str) -> int | None:
        """The version the server resolves ``model``'s ``label`` to."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name=model, version_label=label),
            metadata_field=["signature_def"],
        )
        try:
            response = await self._predictions.GetModelMetadata(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        spec = response.model_spec
        return spec.version.value if spec.HasField("version") else None


def _translate(exc: grpc.aio.AioRpcError) -> ServerCallError:
    code = exc.code()
    return ServerCallError(code.name, exc.details() or code.name)
