"""The common case of intake in one C pass: event bytes -> checked model inputs.

msgspec decodes the bytes straight into a struct typed from the signature (each
input's dtype, fixed length and integer range; the copied fields as any JSON), so a
good event is parsed and checked at once and no dict of the whole event is built.
On the demo events this is a third of the bridge's intake cost.

It is a fast path, not the judge. Any event it refuses goes through ``parse_event``
and ``InstanceBuilder.build``, which word the error (or accept the event: the typed
path is stricter in places, e.g. an empty list or an integer sent as 1.0). Where
msgspec is more lenient than orjson, the event does not get here: bytes that are
not all ASCII (msgspec does not check UTF-8 in fields it skips) take the checking
path. One leniency is kept on purpose: a number too large for a double in a field
the bridge never reads (``1e400``; valid JSON that orjson cannot hold) does not fail
the event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import msgspec

from bridge.domain import NO_FIELDS, DType, Instance, Leaf, Signature
from bridge.errors import EventError

# msgspec bounds integers only within int64; a uint64 input takes the checking path.
_INT64_HIGH = 2**63 - 1

Copy = Callable[[Mapping[str, Any]], bytes]  # the copied fields -> their JSON


class TypedDecoder:
    """Decodes and checks one signature's events; ``None`` sends one to the checking path."""

    def __init__(
        self,
        inputs: Sequence[tuple[str, str, DType, tuple[int, ...]]],
        copy_fields: Sequence[str],
        copy: Copy,
    ) -> None:
        """``inputs``: (input name, event field, dtype, instance shape () or (n,), n=-1: any)."""
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        rename: dict[str, str] = {}
        for index, (_, field, dtype, shape) in enumerate(inputs):
            fields.append((f"i{index}", _field_type(dtype, shape)))
            rename[f"i{index}"] = field
        for index, field in enumerate(copy_fields):
            fields.append((f"c{index}", Any, msgspec.UNSET))
            rename[f"c{index}"] = field
        struct = msgspec.defstruct("Event", fields, rename=rename)
        self._decoder = msgspec.json.Decoder(struct)
        self._inputs = [(name, shape == ()) for name, _, _, shape in inputs]
        self._count = len(inputs)
        self._copy_fields = tuple(copy_fields)
        self._copy = copy
        # Every input of a fixed length: all instances share one shapes dict and batch key.
        self._fixed: dict[str, tuple[int, ...]] | None = None
        if all(-1 not in shape for _, _, _, shape in inputs):
            self._fixed = {name: shape for name, _, _, shape in inputs}
        self._fixed_key = tuple(self._fixed.values()) if self._fixed is not None else ()

    @classmethod
    def for_signature(
        cls,
        signature: Signature,
        input_map: Mapping[str, str],
        copy_fields: Sequence[str],
        copy: Copy,
    ) -> TypedDecoder | None:
        """The decoder, or None where the signature needs what only the checking path does."""
        inputs = []
        for name, spec in signature.inputs.items():
            shape = spec.instance_shape
            dtype = spec.dtype
            if (
                shape is None
                or len(shape) > 1
                or not (dtype.is_float or dtype.is_integer or dtype is DType.BOOL)
            ):
                return None  # strings (base64 objects) and nested lists: the checking path
            if dtype is DType.UINT64:
                return None
            inputs.append((name, input_map.get(name, name), dtype, shape))
        names = [field for _, field, _, _ in inputs] + list(copy_fields)
        if len(set(names)) != len(names):
            return None  # a field read twice (an input also copied): one struct field each
        return cls(inputs, copy_fields, copy)

    def decode(self, value: bytes) -> Instance | None:
        if not value.isascii():
            return None
        try:
            event = self._decoder.decode(value)
        except (msgspec.MsgspecError, RecursionError):
            return None
        parts = msgspec.structs.astuple(event)
        values: dict[str, list[Leaf]] = {}
        for (name, scalar), leaf in zip(self._inputs, parts, strict=False):
            values[name] = [leaf] if scalar else leaf
        copied = NO_FIELDS
        if self._copy_fields:
            present = {
                field: part
                for field, part in zip(self._copy_fields, parts[self._count :], strict=True)
                if part is not msgspec.UNSET
            }
            try:
                copied = self._copy(present)
            except EventError:
                return None  # the checking path raises it again, with its wording
        if self._fixed is not None:
            return Instance(values, self._fixed, copied, self._fixed_key)
        shapes: dict[str, tuple[int, ...]] = {
            name: () if scalar else (len(values[name]),) for name, scalar in self._inputs
        }
        return Instance(values, shapes, copied, tuple(shapes.values()))


def _field_type(dtype: DType, shape: tuple[int, ...]) -> Any:
    leaf: Any
    if dtype.is_float:
        leaf = float  # msgspec's float takes JSON integers too, not booleans: as the checks do
    elif dtype is DType.BOOL:
        leaf = bool
    else:
        low, high = dtype.int_range
        leaf = Annotated[int, msgspec.Meta(ge=low, le=min(high, _INT64_HIGH))]
    if shape == ():
        return leaf
    (length,) = shape
    # An empty list takes the checking path (it has its own rule for shape [0]).
    bounds = (
        msgspec.Meta(min_length=1)
        if length == -1
        else msgspec.Meta(min_length=length, max_length=length)
    )
    return Annotated[list[leaf], bounds]
