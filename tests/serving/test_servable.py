"""LoadedVersion: signatures from saved_model.pb, run, TF errors as ServingError."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from serving.errors import ServingError
from serving.servable import LoadedVersion, dtype_name, runtime_message
from tests.serving.toy_models import ModelStore, write_broken_version, write_wrong_tags_version


@pytest.fixture
def scale3(model_store: ModelStore) -> LoadedVersion:
    path = model_store.exported("scale", 3)
    return LoadedVersion.load("toy", 3, str(path))


@pytest.fixture
def multi(model_store: ModelStore) -> LoadedVersion:
    path = model_store.exported("multi", 2)
    return LoadedVersion.load("multi", 2, str(path))


def test_signature_defs_are_those_of_the_serve_meta_graph(
    scale3: LoadedVersion, model_store: ModelStore
) -> None:
    saved_model = saved_model_pb2.SavedModel()
    pb = model_store.exported("scale", 3) / "saved_model.pb"
    saved_model.ParseFromString(pb.read_bytes())
    (meta_graph,) = saved_model.meta_graphs
    assert dict(scale3.signature_defs) == dict(meta_graph.signature_def)
    # What TF Serving's metadata lists, the init op included.
    assert set(scale3.signature_defs) == {"serving_default", "negate", "__saved_model_init_op"}
    default = scale3.signature_defs["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1]
    assert (scale3.name, scale3.version, scale3.path) == (
        "toy",
        3,
        str(model_store.exported("scale", 3)),
    )


def test_run_computes_with_the_loaded_version(scale3: LoadedVersion) -> None:
    out = scale3.run("serving_default", {"x": np.array([1.0, 2.5], np.float32)}, ["y"])
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], np.array([3.0, 7.5], np.float32))
    negated = scale3.run("negate", {"x": np.array([2.0], np.float32)}, [])
    np.testing.assert_array_equal(negated["y"], np.array([-6.0], np.float32))


def test_run_with_several_dtypes_and_an_output_filter(multi: LoadedVersion) -> None:
    inputs = {
        "a": np.array([[1.0, 1.0], [0.5, 2.0]], np.float32),
        "n": np.array([10, 20], np.int64),
        "s": np.array([b"ab", b"cd"], dtype=object),
    }
    out = multi.run("serving_default", inputs, [])
    assert set(out) == {"score", "n_plus_version", "shout"}
    np.testing.assert_array_equal(out["score"], np.array([3.0, 4.5], np.float32))
    assert out["n_plus_version"].dtype == np.int64
    np.testing.assert_array_equal(out["n_plus_version"], [12, 22])
    assert list(out["shout"]) == [b"AB", b"CD"]
    only = multi.run("serving_default", inputs, ["shout"])
    assert list(only) == ["shout"]


def test_wrong_dtype_is_invalid_argument_with_the_runtime_message(multi: LoadedVersion) -> None:
    inputs = {
        "a": np.array([[1.0, 1.0]], np.float32),
        "n": np.array([1.5], np.float64),  # second input in the request: arg[1]
        "s": np.array([b"x"], dtype=object),
    }
    with pytest.raises(ServingError) as caught:
        multi.run("serving_default", inputs, [])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Expects arg[1] to be int64 but double is provided"


def test_string_for_float_is_the_reference_example(scale3: LoadedVersion) -> None:
    with pytest.raises(ServingError) as caught:
        scale3.run("serving_default", {"x": np.array([b"a"], dtype=object)}, [])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Expects arg[0] to be float but string is provided"


def test_wrong_shape_is_invalid_argument_from_the_tf_runtime(multi: LoadedVersion) -> None:
    inputs = {
        "a": np.array([[1.0, 2.0, 3.0]], np.float32),  # [1, 3] @ [2, 1]
        "n": np.array([1], np.int64),
        "s": np.array([b"x"], dtype=object),
    }
    with pytest.raises(ServingError) as caught:
        multi.run("serving_default", inputs, [])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The runtime's own words, without eager execution's wrapping.
    assert caught.value.message.startswith("Matrix size-incompatible: In[0]: [1,3], In[1]: [2,1]")
    assert "Graph execution error" not in caught.value.message
    assert "[Op:" not in caught.value.message


def test_unknown_signature_and_unknown_output(scale3: LoadedVersion) -> None:
    x = {"x": np.array([1.0], np.float32)}
    with pytest.raises(ServingError) as caught:
        scale3.run("nope", x, [])
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == 'Serving signature key "nope" not found.'
    with pytest.raises(ServingError) as caught:
        scale3.run("serving_default", x, ["z"])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == (
        "output tensor alias not found in signature: z Outputs expected to be in the set {y}."
    )


def test_runtime_message_strips_eager_wrapping() -> None:
    wrapped = (
        "Graph execution error:\n\nDetected at node StatefulPartitionedCall/MatMul defined at "
        "(most recent call last):\n<stack traces unavailable>\nMatrix size-incompatible\n\t "
        "[[{{node StatefulPartitionedCall/MatMul}}]] [Op:__inference_signature_wrapper_94]"
    )
    assert runtime_message(wrapped) == (
        "Matrix size-incompatible\n\t [[{{node StatefulPartitionedCall/MatMul}}]]"
    )
    assert runtime_message("plain") == "plain"
    assert dtype_name(types_pb2.DT_FLOAT) == "float"
    assert dtype_name(types_pb2.DT_STRING) == "string"


def test_run_is_thread_safe(scale3: LoadedVersion) -> None:
    def call(i: int) -> float:
        out = scale3.run("serving_default", {"x": np.array([float(i)], np.float32)}, ["y"])
        return float(out["y"][0])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(64)))
    assert results == [3.0 * i for i in range(64)]


def test_broken_saved_model_is_data_loss(tmp_path: Path) -> None:
    path = write_broken_version(tmp_path / "1")
    with pytest.raises(ServingError) as caught:
        LoadedVersion.load("bad", 1, str(path))
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    assert caught.value.message == f"Can't parse {path / 'saved_model.pb'} as binary proto"


def test_missing_saved_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ServingError) as caught:
        LoadedVersion.load("bad", 1, str(tmp_path))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message.startswith("Could not find SavedModel .pb or .pbtxt")


def test_no_serve_meta_graph_is_not_found(tmp_path: Path, model_store: ModelStore) -> None:
    path = write_wrong_tags_version(model_store.exported("scale", 1), tmp_path / "1")
    with pytest.raises(ServingError) as caught:
        LoadedVersion.load("bad", 1, str(path))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message.startswith(
        "Could not find meta graph def matching supplied tags: { serve }."
    )


async def test_in_flight_counts_and_drained_waits(scale3: LoadedVersion) -> None:
    assert scale3.in_flight_count == 0
    await scale3.drained()  # idle: returns at once
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with scale3.in_flight():
            entered.set()
            leave.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    assert await asyncio.to_thread(entered.wait, 10)
    assert scale3.in_flight_count == 1
    drained = asyncio.ensure_future(scale3.drained())
    await asyncio.sleep(0)
    assert not drained.done()
    leave.set()
    await asyncio.wait_for(drained, 10)
    worker.join()
    assert scale3.in_flight_count == 0


def test_run_after_release_is_not_found(scale3: LoadedVersion) -> None:
    scale3.release()
    with pytest.raises(ServingError) as caught:
        scale3.run("serving_default", {"x": np.array([1.0], np.float32)}, [])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert caught.value.message == "Servable not found for request: Specific(toy, 3)"
