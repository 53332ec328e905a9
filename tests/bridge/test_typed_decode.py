"""The typed fast path agrees with the checking path: same instance, or the same error.

``InstanceBuilder.decode`` tries msgspec's typed decoding first and falls back to
``parse_event`` + ``build``; an event must end the same either way.
"""

from __future__ import annotations

import orjson
import pytest

from bridge.domain import DType, Signature, TensorSpec
from bridge.errors import EventError
from bridge.pipeline.instances import InstanceBuilder, parse_event

from .signatures import COUNTS, FRAUD, MIXED, fraud_event

MAX_BYTES = 1 << 20


def _checked(builder: InstanceBuilder, value: bytes | None) -> object:
    """What the checking path alone makes of ``value``: the instance or the error's text."""
    try:
        instance = builder.build(parse_event(value, MAX_BYTES))
    except EventError as exc:
        return (type(exc), exc.message)
    return (instance.values, instance.shapes, instance.copied, instance.shape_key)


def _decoded(builder: InstanceBuilder, value: bytes | None) -> object:
    try:
        instance = builder.decode(value, MAX_BYTES)
    except EventError as exc:
        return (type(exc), exc.message)
    return (instance.values, instance.shapes, instance.copied, instance.shape_key)


def _fraud(**fields: object) -> bytes:
    return orjson.dumps(fraud_event(**fields))


FRAUD_VALUES = [
    _fraud(),
    _fraud(amount=3),  # an int for a float
    _fraud(amount=True),
    _fraud(amount=None),
    _fraud(amount="12"),
    _fraud(amount=[1.0]),
    _fraud(pca=[0.5] * 27),
    _fraud(pca=[0.5] * 29),
    _fraud(pca=[]),
    _fraud(pca=[[0.5]] * 28),
    _fraud(pca=[0.5] * 27 + [False]),
    _fraud(id={"nested": [1, 2, {"x": None}]}),
    _fraud(id="é"),  # not ASCII: the checking path decides
    _fraud(extra=[1, 2, 3], more={"a": "b"}),
    b'{"time": 1, "amount": 2, "pca": ' + orjson.dumps([0.1] * 28) + b', "time": "x"}',
    b'{"time": "x", "amount": 2, "pca": ' + orjson.dumps([0.1] * 28) + b', "time": 1}',
    b'{"time": 1.0, "amount": 2.0}',
    b"[1, 2]",
    b'"text"',
    b"{not json",
    b'{"x": "\\ud800", "time": 1, "amount": 2, "pca": []}',
    b'{"x": "\xff", "time": 1, "amount": 2, "pca": ' + orjson.dumps([0.1] * 28) + b"}",
    b"",
    None,
    _fraud(id=[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]),
    b'{"id": ' + b"[" * 300 + b"]" * 300 + b', "time": 1, "amount": 2, "pca": []}',
]


@pytest.mark.parametrize("value", FRAUD_VALUES)
def test_fraud_events_end_the_same_on_both_paths(value: bytes | None) -> None:
    builder = InstanceBuilder(FRAUD, copy_fields=["id"])
    assert builder._typed is not None
    assert _decoded(builder, value) == _checked(builder, value)


COUNTS_VALUES = [
    b'{"n": 5, "ids": [1, 2, 3], "on": [true, false]}',
    b'{"n": 127, "ids": [9223372036854775807], "on": [false, false]}',
    b'{"n": 128, "ids": [1], "on": [true, true]}',
    b'{"n": -129, "ids": [1], "on": [true, true]}',
    b'{"n": 1.0, "ids": [1], "on": [true, true]}',
    b'{"n": true, "ids": [1], "on": [true, true]}',
    b'{"n": 1, "ids": [9223372036854775808], "on": [true, true]}',
    b'{"n": 1, "ids": [], "on": [true, true]}',
    b'{"n": 1, "ids": [1], "on": [1, 0]}',
    b'{"n": 1, "ids": [1], "on": [true]}',
]


@pytest.mark.parametrize("value", COUNTS_VALUES)
def test_integer_and_bool_events_end_the_same_on_both_paths(value: bytes) -> None:
    builder = InstanceBuilder(COUNTS, input_map={"ids": "ids"})
    assert builder._typed is not None
    assert _decoded(builder, value) == _checked(builder, value)


def test_the_fast_path_takes_a_good_event_and_leaves_the_rest() -> None:
    typed = InstanceBuilder(FRAUD, copy_fields=["id"])._typed
    assert typed is not None
    instance = typed.decode(_fraud(amount=3))
    assert instance is not None and instance.values["amount"] == [3.0]
    assert orjson.loads(instance.copied) == {"id": "tx-1"}
    assert typed.decode(_fraud(amount=True)) is None  # the checks word the error
    assert typed.decode(_fraud(id="é")) is None  # not ASCII: UTF-8 is checked there


def test_signatures_the_fast_path_cannot_hold_take_the_checking_path() -> None:
    assert InstanceBuilder(MIXED)._typed is None  # strings, nested lists
    uint64 = Signature("u", 1, "s", {"x": TensorSpec(DType.UINT64, (-1,))}, {})
    assert InstanceBuilder(uint64)._typed is None
    # A field read twice (an input that is also copied) is one struct field too many.
    assert InstanceBuilder(FRAUD, copy_fields=["amount"])._typed is None
    assert InstanceBuilder(FRAUD, copy_fields=["id"])._typed is not None


def test_a_number_too_large_in_a_field_never_read_is_the_one_known_leniency() -> None:
    value = _fraud(extra=1).replace(b'"extra":1', b'"extra":1e400')
    builder = InstanceBuilder(FRAUD)
    with pytest.raises(EventError, match="not JSON"):
        parse_event(value, MAX_BYTES)  # orjson cannot hold it
    assert builder.decode(value, MAX_BYTES).values["amount"] == [12.5]
