"""Stand-ins for ``LoadedVersion`` and ``ModelManager`` in unit tests: no TF run, no files."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError


def signature(
    inputs: Mapping[str, int], outputs: Mapping[str, int], defaults: Sequence[str] = ()
) -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for alias, dtype in inputs.items():
        sig.inputs[alias].dtype = dtype
        sig.inputs[alias].name = f"serving_default_{alias}:0"
    for alias, dtype in outputs.items():
        sig.outputs[alias].dtype = dtype
        sig.outputs[alias].name = f"StatefulPartitionedCall:{alias}"
    for alias in defaults:
        sig.defaults[alias].dtype = inputs[alias]
    return sig


def doubling(inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]) -> dict[str, np.ndarray]:
    """y = 2x and z = x + 1 for whichever outputs are asked for."""
    x = inputs["x"]
    every = {"y": x * 2, "z": x + 1}
    return {k: every[k] for k in (output_keys or every)}


class FakeVersion:
    """Runs a Python function; ``gate`` can hold runs to make batching observable."""

    def __init__(
        self,
        function: Callable[
            [Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]
        ] = doubling,
        name: str = "m",
        version: int = 1,
    ) -> None:
        self.name = name
        self.version = version
        self.path = f"/models/{name}/{version}"
        self.signature_defs: dict[str, meta_graph_pb2.SignatureDef] = {
            "serving_default": signature(
                {"x": types_pb2.DT_FLOAT}, {"y": types_pb2.DT_FLOAT, "z": types_pb2.DT_FLOAT}
            )
        }
        self.function = function
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[dict[str, np.ndarray]] = []
        self.holds = 0
        self._lock = threading.Lock()

    def run(
        self, signature_key: str, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append(dict(inputs))
        self.gate.wait(timeout=30)
        return self.function(inputs, output_keys)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._lock:
            self.holds += 1
        try:
            yield
        finally:
            with self._lock:
                self.holds -= 1


class FakeManager:
    """Resolves names to fake versions with ``ModelManager``'s messages (no loading)."""

    def __init__(self, *versions: FakeVersion, labels: Mapping[str, int] | None = None) -> None:
        self.versions = {(v.name, v.version): v for v in versions}
        self.labels = dict(labels or {})
        self.reloaded: list[model_server_config_pb2.ModelServerConfig] = []

    def resolve(self, spec: model_pb2.ModelSpec) -> FakeVersion:
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        numbers = sorted(v for (n, v) in self.versions if n == spec.name)
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            if spec.version_label not in self.labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            wanted = self.labels[spec.version_label]
        elif choice == "version":
            wanted = spec.version.value
        elif numbers:
            wanted = numbers[-1]
        else:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )
        if wanted not in numbers:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {wanted})",
            )
        return self.versions[(spec.name, wanted)]

    def status(
        self, name: str, version: int | None
    ) -> list[get_model_status_pb2.ModelVersionStatus]:
        numbers = sorted((v for (n, v) in self.versions if n == name), reverse=True)
        if version is not None:
            if version not in numbers:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            numbers = [version]
        if not numbers:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        return [
            get_model_status_pb2.ModelVersionStatus(
                version=v, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
            )
            for v in numbers
        ]

    async def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        self.reloaded.append(config)
