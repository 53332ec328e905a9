"""The private descriptor pool behind every generated ``bridge.wire`` module.

``proto/generate.py`` rewrites each generated ``*_pb2.py`` to register into
``POOL`` rather than protobuf's default pool, so ``bridge.wire`` and the official
``tensorflow_serving`` / ``tensorflow`` modules (which define the same full
names, e.g. ``tensorflow.serving.ModelSpec``, from other files) can be imported
in one process.

A pool resolves imports only among its own files, so the well-known types our
.proto files import are added here first, copied from the modules protobuf
ships. Their message classes in this pool are distinct from ``any_pb2.Any``
and ``wrappers_pb2.Int64Value``; see ``bridge.wire`` for what that means.
"""

from google.protobuf import any_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

POOL = descriptor_pool.DescriptorPool()

# The private pool's copies of the well-known types, built up front: the
# pure-Python protobuf backend gives a map value (map<string, Any>) a class only
# once one exists, and upb holds classes weakly, so this list keeps them alive.
WELL_KNOWN_CLASSES: list[type[Message]] = []

# Every google/protobuf/*.proto that a file in proto/bridge/wire imports.
for _module in (any_pb2, wrappers_pb2):
    _file = POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
    for _descriptor in _file.message_types_by_name.values():
        _class = message_factory.GetMessageClass(_descriptor)
        # Without a module the classes print as <class 'Int64Value'>, which makes
        # "expected <class ...> got <class 'google.protobuf.wrappers_pb2.Int64Value'>"
        # errors read like nonsense.
        _class.__module__ = __name__
        WELL_KNOWN_CLASSES.append(_class)
