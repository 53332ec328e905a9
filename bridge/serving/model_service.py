"""TF Serving's ModelService on the shared channel: GetModelStatus, HandleReloadConfigRequest.

The bridge asks GetModelStatus whether the server is up (``GrpcModelClient.is_ready``);
``bridge serving status|label`` read the versions' states and reload the config.
The same API on a real ``tensorflow/serving`` and on ``python -m serving``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from bridge.serving.grpc_channel import GrpcChannel, error_for, status_code
from bridge.wire import get_model_status_pb2, model_management_pb2, model_pb2
from bridge.wire import model_server_config_pb2 as config_pb2

_State = get_model_status_pb2.ModelVersionStatus.State


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: grpc.StatusCode  # OK unless a load failed
    error_message: str

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"

    @property
    def failed(self) -> bool:
        return self.state == "END" and self.error_code != grpc.StatusCode.OK

    @property
    def error(self) -> str:
        """``UNKNOWN: Could not load ...``, or "" when the version has no error."""
        if self.error_code == grpc.StatusCode.OK:
            return ""
        return f"{self.error_code.name}: {self.error_message}"


def _state_name(state: int) -> str:
    try:
        return _State.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


class ModelServiceClient:
    def __init__(self, channel: GrpcChannel) -> None:
        self._channel = channel

    @property
    def target(self) -> str:
        return self._channel.target

    @property
    def timeout_s(self) -> float:
        return self._channel.timeout_s

    async def status(self, model: str, version: int | None = None) -> list[VersionStatus]:
        """Every version the server tracks for ``model`` (or just ``version``), highest first."""
        spec = model_pb2.ModelSpec(name=model)
        if version is not None:
            spec.version.value = version
        response = await self._channel.call(
            self._channel.models.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
        )
        versions = [
            VersionStatus(
                version=status.version,
                state=_state_name(status.state),
                error_code=status_code(status.status.error_code),
                error_message=status.status.error_message,
            )
            for status in response.model_version_status
        ]
        return sorted(versions, key=lambda status: status.version, reverse=True)

    async def reload(self, config: config_pb2.ModelServerConfig) -> None:
        """HandleReloadConfigRequest: ``config`` replaces the server's whole model list.

        A config the server refuses raises the same classes as a failed call.
        """
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        response = await self._channel.call(self._channel.models.HandleReloadConfigRequest, request)
        code = status_code(response.status.error_code)
        if code != grpc.StatusCode.OK:
            raise error_for(code, response.status.error_message)
