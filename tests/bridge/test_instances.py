"""Events are checked against the signature before any model call."""

from __future__ import annotations

import base64
from dataclasses import replace

import orjson
import pytest

from bridge.domain import DType, TensorSpec
from bridge.errors import (
    FieldTooDeepError,
    InputShapeError,
    InputTypeError,
    MissingInputError,
    NotAnObjectError,
    NotJsonError,
    OversizeError,
)
from bridge.pipeline.instances import InstanceBuilder, parse_event

from .signatures import FRAUD, MIXED, fraud_event


def test_builds_flat_values_and_shapes_in_signature_order() -> None:
    builder = InstanceBuilder(FRAUD, copy_fields=["id", "absent"])
    instance = builder.build(fraud_event(amount=3))
    assert list(instance.values) == ["time", "amount", "pca"]
    assert instance.values["amount"] == [3.0]  # an int is a fine float; packing converts it
    assert instance.shapes == {"time": (), "amount": (), "pca": (28,)}
    assert orjson.loads(instance.copied) == {"id": "tx-1"}


def test_input_map_renames_fields() -> None:
    builder = InstanceBuilder(FRAUD, input_map={"amount": "amount_eur"})
    event = fraud_event()
    event["amount_eur"] = event.pop("amount")
    assert builder.build(event).values["amount"] == [12.5]
    with pytest.raises(MissingInputError, match="field 'amount_eur' \\(input 'amount'\\)"):
        builder.build(fraud_event())


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (None, NotJsonError, "no value"),
        (b"\xff\xfe not json", NotJsonError, "not JSON"),
        (b"[1, 2]", NotAnObjectError, "JSON list"),
        (b'"text"', NotAnObjectError, "JSON str"),
        (b"x" * 101, OversizeError, "101 bytes, over the limit of 100"),
    ],
)
def test_undecodable_values(raw: bytes | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_event(raw, max_bytes=100)


def test_parse_event_returns_the_object() -> None:
    assert parse_event(orjson.dumps({"a": 1}), max_bytes=100) == {"a": 1}


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"amount": "12"}, InputTypeError, "field 'amount' holds str '12', .* DT_FLOAT"),
        ({"amount": True}, InputTypeError, "holds bool"),
        ({"amount": None}, InputTypeError, "holds null"),
        ({"pca": [0.1] * 27}, InputShapeError, r"shape \[27\], the signature expects \[28\]"),
        ({"pca": 0.1}, InputShapeError, r"shape \[\], the signature expects \[28\]"),
        ({"time": [1.0]}, InputShapeError, r"shape \[1\], the signature expects \[\]"),
        ({"pca": [0.1] * 27 + ["x"]}, InputTypeError, "field 'pca' holds str 'x'"),
    ],
)
def test_wrong_types_and_shapes(
    overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        InstanceBuilder(FRAUD).build(fraud_event(**overrides))


def test_missing_input_names_every_needed_field() -> None:
    event = fraud_event()
    del event["pca"]
    with pytest.raises(MissingInputError, match=r"missing field 'pca'; .*'time', 'amount', 'pca'"):
        InstanceBuilder(FRAUD).build(event)


def test_every_dtype_family() -> None:
    builder = InstanceBuilder(MIXED)
    instance = builder.build(
        {
            "count": 7,
            "flag": False,
            "text": {"b64": base64.b64encode(b"\x00\xff").decode()},
            "grid": [[1, 2.5], [3, 4]],
        }
    )
    assert instance.values == {
        "count": [7],
        "flag": [False],
        "text": [b"\x00\xff"],
        "grid": [1.0, 2.5, 3.0, 4.0],
    }
    assert instance.shapes["grid"] == (2, 2)
    assert builder.build({"count": 1, "flag": True, "text": "é", "grid": [[0, 0]]}).values[
        "text"
    ] == ["é".encode()]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"count": 2**31}, "out of range for DT_INT32"),
        ({"count": 1.5}, "holds float"),
        ({"flag": 1}, "holds int"),
        ({"text": 5}, "holds int"),
        ({"text": {"b64": "!!"}}, "invalid base64"),
        ({"grid": [[1, 2], [3]]}, "ragged"),
        ({"grid": [[1, 2, 3]]}, r"shape \[1, 3\], the signature expects \[\?, 2\]"),
    ],
)
def test_mixed_signature_rejections(overrides: dict[str, object], message: str) -> None:
    event: dict[str, object] = {"count": 1, "flag": True, "text": "a", "grid": [[1, 2]]}
    event.update(overrides)
    with pytest.raises((InputTypeError, InputShapeError), match=message):
        InstanceBuilder(MIXED).build(event)


def test_fixed_shape_instances_share_one_batch_key() -> None:
    builder = InstanceBuilder(FRAUD)
    one = builder.build(fraud_event())
    two = builder.build(fraud_event(amount=3, pca=[1] * 28))
    assert one.shapes == {"time": (), "amount": (), "pca": (28,)}
    assert one.shape_key == two.shape_key == ((), (), (28,))


def test_variable_length_vectors_on_the_fast_path_keep_their_own_shape() -> None:
    signature = replace(FRAUD, inputs={**FRAUD.inputs, "pca": TensorSpec(DType.FLOAT, (-1, -1))})
    builder = InstanceBuilder(signature)
    short = builder.build(fraud_event(pca=[0.5] * 3))
    long = builder.build(fraud_event(pca=[0.5] * 5))
    assert (short.shapes["pca"], long.shapes["pca"]) == ((3,), (5,))
    assert short.shape_key != long.shape_key


def test_an_input_off_the_fast_path_gets_its_own_shape() -> None:
    # A 2-D input has no fast path; its ints are converted to the float dtype.
    signature = replace(FRAUD, inputs={**FRAUD.inputs, "pca": TensorSpec(DType.FLOAT, (-1, 2, 2))})
    instance = InstanceBuilder(signature).build(fraud_event(pca=[[1, 2], [3, 4.5]]))
    assert instance.shapes == {"time": (), "amount": (), "pca": (2, 2)}
    assert instance.values["pca"] == [1.0, 2.0, 3.0, 4.5]
    assert instance.shape_key == ((), (), (2, 2))


def test_variable_inner_dims_give_different_shape_keys() -> None:
    builder = InstanceBuilder(MIXED)
    base = {"count": 1, "flag": True, "text": "a"}
    one = builder.build({**base, "grid": [[1, 2]]})
    two = builder.build({**base, "grid": [[1, 2], [3, 4]]})
    assert one.shape_key != two.shape_key


@pytest.mark.parametrize(
    "pca",
    [
        [0.1] * 27 + [True],  # a bool is not a number here, even though Python says so
        [0.1] * 27 + [None],
        [0.1] * 27 + [[0.1]],
        [0.1] * 29,
    ],
)
def test_the_fast_path_rejects_what_the_general_path_rejects(pca: list[object]) -> None:
    with pytest.raises((InputTypeError, InputShapeError)):
        InstanceBuilder(FRAUD).build(fraud_event(pca=pca))


def test_integer_lists_are_range_checked_on_the_fast_path() -> None:
    from bridge.domain import DType, Signature, TensorSpec

    ids = Signature("m", 1, "s", {"ids": TensorSpec(DType.INT8, (-1, 3))}, {})
    assert InstanceBuilder(ids).build({"ids": [1, -128, 127]}).values["ids"] == [1, -128, 127]
    with pytest.raises(InputTypeError, match="out of range for DT_INT8"):
        InstanceBuilder(ids).build({"ids": [1, 2, 128]})


def nested(depth: int, leaf: object = 1.0) -> object:
    value: object = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [255, 1000, 1023])
def test_inputs_nested_deeper_than_a_tensor_fail_as_wrong_shape(depth: int) -> None:
    # orjson reads up to 1,024 levels; recursing over them once broke the bridge.
    event = fraud_event(pca=nested(depth))
    with pytest.raises(InputShapeError, match="deeper than 254 levels"):
        InstanceBuilder(FRAUD).build(event)
    unknown_rank = replace(FRAUD, inputs={**FRAUD.inputs, "pca": TensorSpec(DType.FLOAT, None)})
    with pytest.raises(InputShapeError, match="deeper than 254 levels"):
        InstanceBuilder(unknown_rank).build(event)


def test_a_deeply_nested_value_of_the_wrong_type_names_it_briefly() -> None:
    event = fraud_event(amount={"a": nested(900)})
    with pytest.raises(InputTypeError, match="holds dict") as caught:
        InstanceBuilder(FRAUD).build(event)
    assert len(str(caught.value)) < 200


def test_a_rank_254_input_is_still_a_tensor() -> None:
    unknown_rank = replace(FRAUD, inputs={**FRAUD.inputs, "pca": TensorSpec(DType.FLOAT, None)})
    instance = InstanceBuilder(unknown_rank).build(fraud_event(pca=nested(254, 0.5)))
    assert instance.shapes["pca"] == (1,) * 254
    assert instance.values["pca"] == [0.5]


def test_a_copied_field_too_deep_for_the_result_fails_the_event_at_once() -> None:
    builder = InstanceBuilder(FRAUD, copy_fields=["id", "meta"])
    assert builder.build(fraud_event(meta=nested(250, "x"))).copied is not None
    with pytest.raises(FieldTooDeepError, match="'meta'"):
        builder.build(fraud_event(meta=nested(300, "x")))
