"""TensorFlow Serving's gRPC contract, generated from ``proto/bridge/wire/*.proto``.

The bridge talks to TF Serving without ``tensorflow-serving-api`` (which pulls
in all of TensorFlow). The .proto sources here declare only what the bridge
uses, under upstream's packages and field numbers, so messages are
wire-compatible with TF Serving and the gRPC paths are upstream's
(``/tensorflow.serving.PredictionService/Predict`` ...). Regenerate with
``make proto``; never edit the ``*_pb2*`` files by hand.

Modules (``from bridge.wire import predict_pb2``):

- ``types_pb2`` (``tensorflow.DataType``), ``tensor_shape_pb2``, ``tensor_pb2``,
  ``meta_graph_pb2`` (``TensorInfo``, ``SignatureDef``), ``error_codes_pb2``
  (``tensorflow.error.Code``)
- ``model_pb2`` (``ModelSpec``), ``predict_pb2``, ``get_model_metadata_pb2``,
  ``get_model_status_pb2``, ``status_pb2``, ``model_management_pb2``,
  ``model_server_config_pb2``, ``file_system_storage_path_source_pb2``
- ``prediction_service_pb2_grpc``, ``model_service_pb2_grpc``: stubs and servicers
- ``session_bundle_config_pb2`` (``BatchingParameters``), ``monitoring_config_pb2``:
  not used by the bridge; the local model server (``serving/``) reads its config
  files with them, as ``tensorflow-serving-api`` has no module for either

The private pool. These modules register their descriptors in ``POOL``
(``_pool.py``), not protobuf's default pool, so they can share a process with
the official ``tensorflow_serving`` modules that define the same full names.
What follows from that:

- Well-known types inside our messages are the pool's own classes, not
  ``wrappers_pb2.Int64Value`` / ``any_pb2.Any``. The stubs say otherwise, but
  ``ModelSpec(version=wrappers_pb2.Int64Value(value=3))`` and ``CopyFrom`` of
  such a message raise ``TypeError``. Set the fields instead:
  ``spec.version.value = 3``. ``Any.Pack``/``Unpack``/``Is`` work as usual and
  accept messages of any pool.
- ``json_format`` resolves an ``Any`` through the default pool unless told
  otherwise: pass ``descriptor_pool=POOL``.
- Messages from the two module sets never mix directly; convert through bytes
  (``ours.FromString(official.SerializeToString())``), which is lossless.
- With the pure-Python protobuf backend (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``)
  protobuf's generated-code builder also registers every message in the default
  symbol database, so there the two module sets cannot be imported together.
  ``bridge.wire`` alone works with every backend; the default upb backend has
  no such registration.
"""

from bridge.wire._pool import POOL

__all__ = ["POOL"]
