"""``--enable_batching`` through the process: admission errors and timeouts.

Batches here only run when full (``max_batch_size`` 2, a one-minute
``batch_timeout_micros``), so a one-row request waits in the open batch until the
test fills it: the waits are the server's, not the test's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.serving.server_process import ServerProcess, running_server

if TYPE_CHECKING:
    from tests.serving.conftest import ModelStore

pytestmark = pytest.mark.integration

TIMEOUT = 60


def start(
    tmp_path_factory: pytest.TempPathFactory,
    model_store: ModelStore,
    batching: str,
    *flags: str,
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("batching")
    (root / "toy").mkdir()
    model_store.install(root / "toy", 1)
    params = root / "batching.config"
    params.write_text(batching, encoding="utf-8")
    args = [
        f"--model_base_path={root / 'toy'}",
        "--model_name=toy",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        *flags,
    ]
    with running_server(args, root, ["toy"]) as server:
        yield server


@pytest.fixture(scope="module")
def full_only(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> Iterator[ServerProcess]:
    batching = (
        "max_batch_size { value: 2 } batch_timeout_micros { value: 60000000 } "
        "max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }"
    )
    yield from start(tmp_path_factory, model_store, batching, "--grpc_max_threads=1")


def toy_request(*values: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return request


def rest_predict(server: ServerProcess, values: list[float]) -> httpx.Response:
    return httpx.post(
        f"{server.rest_url}/v1/models/toy:predict",
        content=json.dumps({"instances": values}),
        timeout=TIMEOUT,
    )


def test_queue_full_oversize_and_thread_limit(full_only: ServerProcess) -> None:
    with grpc.insecure_channel(full_only.grpc_target) as channel:
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        # One row waits in the open batch, and holds the only gRPC "thread".
        waiting = predictions.Predict.future(toy_request(7), timeout=TIMEOUT)
        try:
            # Two rows do not fit beside it, and the queue holds one batch: UNAVAILABLE
            # at once. (Until the first request is queued, two rows simply run.)
            for _ in range(200):
                response = rest_predict(full_only, [1, 2])
                if response.status_code != 200:
                    break
            assert response.status_code == 503
            assert response.json()["error"].startswith(
                "The batch scheduling queue to which this task was submitted is full"
            )
            oversize = rest_predict(full_only, [1, 2, 3])
            assert oversize.status_code == 400
            assert oversize.json() == {
                "error": "Task size 3 is larger than maximum input batch size 2"
            }
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = "toy"
            with pytest.raises(grpc.RpcError) as info:
                models.GetModelStatus(status, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == "Server Threadpool Exhausted"
            # One more row fills the batch: both requests are answered.
            filler = rest_predict(full_only, [5])
            assert (filler.status_code, filler.json()) == (200, {"predictions": [5.0]})
            assert tf.make_ndarray(waiting.result().outputs["y"]).tolist() == [7.0]
        finally:
            waiting.cancel()


@pytest.fixture(scope="module")
def short_rest_timeout(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> Iterator[ServerProcess]:
    # A lone row waits 0.5 s for company, far past its 1 ms REST run timeout.
    batching = "max_batch_size { value: 2 } batch_timeout_micros { value: 500000 }"
    yield from start(tmp_path_factory, model_store, batching, "--rest_api_timeout_in_ms=1")


def test_timeout_in_the_batch_queue_is_resource_exhausted(
    short_rest_timeout: ServerProcess,
) -> None:
    response = rest_predict(short_rest_timeout, [1])
    assert response.status_code == 429
    assert response.json() == {"error": "Run() timeout exceeded while waiting in batching queue"}
