"""``LoadedVersion``: one SavedModel version loaded with TensorFlow.

Signatures are read from the version's ``saved_model.pb`` (the meta graph tagged
``serve``), not from the loaded Python object, so metadata is exactly what
TensorFlow Serving reports (``__saved_model_init_op`` included). ``run`` is
blocking and thread-safe: the front ends call it from worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import ServingError

SERVE_TAG = "serve"

# TensorFlow's error codes are gRPC's codes, number for number.
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

# Eager execution wraps the runtime's message; TF Serving (a Session) sends it bare.
_EAGER_PREFIX = re.compile(
    r"^Graph execution error:\s*\n(?:Detected at node .*? defined at \(most recent call last\):\n"
    r"<stack traces unavailable>\n)?"
)
_EAGER_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")


def status_code(tf_error_code: int) -> grpc.StatusCode:
    """The gRPC code of a TensorFlow error code."""
    return _CODES_BY_NUMBER.get(tf_error_code, grpc.StatusCode.UNKNOWN)


def runtime_message(message_text: str) -> str:
    """A TF runtime error message as a Session would report it."""
    return _EAGER_SUFFIX.sub("", _EAGER_PREFIX.sub("", message_text))


def dtype_name(datatype: int) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> "float", DT_STRING -> "string"."""
    return str(types_pb2.DataType.Name(datatype)).removeprefix("DT_").lower()


def _datatype_of(array: np.ndarray) -> int:
    try:
        return int(tf.as_dtype(array.dtype).as_datatype_enum)
    except TypeError:
        return int(types_pb2.DT_INVALID)


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The signatures of the ``serve`` meta graph in ``path/saved_model.pb`` (or .pbtxt)."""
    directory = Path(path)
    saved_model = saved_model_pb2.SavedModel()
    binary, text = directory / "saved_model.pb", directory / "saved_model.pbtxt"
    # The messages below are the C++ loader's, which TF Serving reports.
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                "Could not find SavedModel .pb or .pbtxt at supplied export directory "
                f"path: {path}",
            )
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        parsed = binary if binary.is_file() else text
        raise ServingError(
            grpc.StatusCode.DATA_LOSS, f"Can't parse {parsed} as binary proto"
        ) from exc
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == {SERVE_TAG}:
            # Copies, so the (possibly large) graph is not kept alive by the signatures.
            signatures: dict[str, meta_graph_pb2.SignatureDef] = {}
            for key, signature in meta_graph.signature_def.items():
                signatures[key] = meta_graph_pb2.SignatureDef()
                signatures[key].CopyFrom(signature)
            return signatures
    raise ServingError(
        grpc.StatusCode.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )


class LoadedVersion:
    """One loaded version of a model: its signatures and a blocking ``run``."""

    def __init__(
        self,
        name: str,
        version: int,
        path: str,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        loaded: Any,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs: Mapping[str, meta_graph_pb2.SignatureDef] = signature_defs
        self._lock = threading.Lock()
        self._in_flight = 0
        # Unloaders waiting for the count to reach zero, each woken on its own loop.
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        # Kept together: the signature functions need the loaded object graph alive.
        self._loaded: Any = loaded
        self._functions: dict[str, Any] | None = dict(loaded.signatures.items())

    @classmethod
    def load(cls, name: str, version: int, path: str) -> LoadedVersion:
        """Load ``path`` with TensorFlow (blocking); failures are ``ServingError``."""
        signature_defs = read_signature_defs(path)
        try:
            loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        except tf.errors.OpError as exc:
            raise ServingError(status_code(exc.error_code), exc.message) from exc
        except Exception as exc:
            # Whatever a broken SavedModel makes the Python loader raise is a failed
            # load of this version, never a crash of the server.
            raise ServingError(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}") from exc
        return cls(name, version, path, signature_defs, loaded)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request against this version; unloading waits for the count to drain."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                waiters = self._idle_waiters if self._in_flight == 0 else []
                if waiters:
                    self._idle_waiters = []
            for loop, idle in waiters:
                loop.call_soon_threadsafe(idle.set)

    @property
    def in_flight_count(self) -> int:
        with self._lock:
            return self._in_flight

    async def drained(self) -> None:
        """Return once no request holds this version (bound it with ``asyncio.timeout``)."""
        idle = asyncio.Event()
        with self._lock:
            if self._in_flight == 0:
                return
            self._idle_waiters.append((asyncio.get_running_loop(), idle))
        await idle.wait()

    def release(self) -> None:
        """Drop the TensorFlow objects; later ``run`` calls get NOT_FOUND."""
        with self._lock:
            self._functions = None
            self._loaded = None

    def run(
        self,
        signature_key: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Run one signature (blocking). Empty ``output_keys`` means every output."""
        functions = self._functions
        if functions is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({self.name}, {self.version})",
            )
        function = functions.get(signature_key)
        signature = self.signature_defs.get(signature_key)
        if function is None or signature is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_key}" not found.',
            )
        feeds = self._feeds(signature, inputs)
        try:
            outputs = function(**feeds)
        except tf.errors.OpError as exc:
            raise ServingError(status_code(exc.error_code), runtime_message(exc.message)) from exc
        except (TypeError, ValueError) as exc:
            # Python-side argument binding (e.g. a missing input).
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        wanted = list(output_keys) or list(signature.outputs)
        result: dict[str, np.ndarray] = {}
        for key in wanted:
            if key not in outputs:
                expected = ",".join(sorted(signature.outputs))
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {key} "
                    f"Outputs expected to be in the set {{{expected}}}.",
                )
            result[key] = outputs[key].numpy()
        return result

    @staticmethod
    def _feeds(
        signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, tf.Tensor]:
        feeds: dict[str, tf.Tensor] = {}
        # Checked here because the eager runtime words the dtype error differently from
        # a Session; the index is the input's position in the request, as upstream.
        for index, (alias, array) in enumerate(inputs.items()):
            info = signature.inputs.get(alias)
            if info is None:
                expected = ",".join(sorted(signature.inputs))
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input tensor alias not found in signature: {alias}. "
                    f"Inputs expected to be in the set {{{expected}}}.",
                )
            got = _datatype_of(array)
            if got != info.dtype:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Expects arg[{index}] to be {dtype_name(info.dtype)} "
                    f"but {dtype_name(got)} is provided",
                )
            feeds[alias] = tf.constant(array)
        return feeds
