"""bridge.wire stays out of the default pool and away from TensorFlow.

Each check runs in a fresh interpreter: import order and ``sys.modules`` are
only meaningful in a process that has imported nothing yet.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bridge.wire

ROOT = Path(__file__).resolve().parents[2]
OUR_MODULES = sorted(f"bridge.wire.{m.name}" for m in pkgutil.iter_modules(bridge.wire.__path__))


def run_python(script: str, *args: str, **env: str) -> str:
    """Run a script in a fresh interpreter; return its stdout, fail with its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_module_list_is_complete() -> None:
    # Guards the subprocess checks against importing too little.
    assert len(OUR_MODULES) >= 18
    assert "bridge.wire.prediction_service_pb2_grpc" in OUR_MODULES
    assert "bridge.wire._pool" in OUR_MODULES


COEXIST = """
import importlib, sys
from google.protobuf import descriptor_pool

ours, official, order = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
for name in (ours + official if order == "ours-first" else official + ours):
    importlib.import_module(name)

from bridge.wire import POOL, predict_pb2 as our_predict
from tensorflow_serving.apis import predict_pb2 as their_predict

# Each full name resolves to its own file in its own pool.
name = "tensorflow.serving.PredictRequest"
assert POOL.FindMessageTypeByName(name).file.name == "bridge/wire/predict.proto"
upstream = descriptor_pool.Default().FindMessageTypeByName(name).file.name
assert upstream == "tensorflow_serving/apis/predict.proto", upstream

theirs = their_predict.PredictRequest()
theirs.model_spec.name = "fraud"
theirs.model_spec.version.value = 3
theirs.inputs["x"].float_val.append(1.5)
mine = our_predict.PredictRequest.FromString(theirs.SerializeToString())
assert mine.model_spec.version.value == 3 and list(mine.inputs["x"].float_val) == [1.5]
assert their_predict.PredictRequest.FromString(mine.SerializeToString()) == theirs
print("ok")
"""


@pytest.mark.parametrize("order", ["ours-first", "official-first"])
def test_both_module_sets_coexist(order: str, official_module_names: list[str]) -> None:
    official = ",".join(official_module_names)
    assert run_python(COEXIST, ",".join(OUR_MODULES), official, order) == "ok\n"


NO_TENSORFLOW = """
import importlib, sys
from google.protobuf import descriptor_pool

for name in sys.argv[1].split(","):
    importlib.import_module(name)

heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "tensorflow_serving"})
assert not heavy, heavy
# Nothing of ours reached the default pool.
default = descriptor_pool.Default()
for lookup, name in [
    (default.FindFileByName, "bridge/wire/predict.proto"),
    (default.FindMessageTypeByName, "tensorflow.serving.ModelSpec"),
    (default.FindEnumTypeByName, "tensorflow.DataType"),
    (default.FindServiceByName, "tensorflow.serving.PredictionService"),
]:
    try:
        lookup(name)
    except KeyError:
        continue
    raise AssertionError(f"{name} is in the default pool")
print("ok")
"""


def test_bridge_wire_does_not_import_tensorflow() -> None:
    assert run_python(NO_TENSORFLOW, ",".join(OUR_MODULES)) == "ok\n"


PURE_PYTHON = """
import importlib, sys
from google.protobuf.internal import api_implementation

assert api_implementation.Type() == "python", api_implementation.Type()
for name in sys.argv[1].split(","):
    importlib.import_module(name)

from bridge.wire import get_model_metadata_pb2 as metadata

response = metadata.GetModelMetadataResponse()
response.model_spec.version.value = 2
signatures = metadata.SignatureDefMap()
signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
response.metadata["signature_def"].Pack(signatures)
parsed = metadata.GetModelMetadataResponse.FromString(response.SerializeToString())
unpacked = metadata.SignatureDefMap()
assert parsed.metadata["signature_def"].Unpack(unpacked) and unpacked == signatures
print("ok")
"""


def test_bridge_wire_works_with_the_pure_python_backend() -> None:
    # The bridge alone must run on any protobuf backend (see bridge/wire/__init__.py
    # for why coexistence with the official modules needs upb).
    output = run_python(
        PURE_PYTHON, ",".join(OUR_MODULES), PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python"
    )
    assert output == "ok\n"
