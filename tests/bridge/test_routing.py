"""Weighted, sticky routes between labels and versions; shadow fractions; the wire form."""

from __future__ import annotations

from collections import Counter

import pytest

from bridge.domain import Target
from bridge.pipeline.routing import (
    RoutesError,
    build_routes,
    parse_assignments,
    parse_control_record,
    target_for,
)


def keys(n: int) -> list[bytes]:
    return [f"card-{i}".encode() for i in range(n)]


def test_targets_are_labels_versions_or_latest() -> None:
    assert target_for("fraud", "canary") == Target("fraud", label="canary")
    assert target_for("fraud", "3") == Target("fraud", version=3)
    assert target_for("fraud", "latest") == Target("fraud")
    with pytest.raises(RoutesError):
        target_for("fraud", "0")


def test_weights_split_traffic() -> None:
    routes = build_routes("fraud", {"stable": 90, "canary": 10})
    counts = Counter(routes.choose(key, ("t", 0, 0)).name for key in keys(20_000))
    assert 0.88 < counts["stable"] / 20_000 < 0.92
    assert counts["stable"] + counts["canary"] == 20_000


def test_a_key_sticks_to_its_target_while_routes_stay() -> None:
    routes = build_routes("fraud", {"stable": 50, "canary": 50})
    first = {key: routes.choose(key, ("t", 0, i)).name for i, key in enumerate(keys(500))}
    again = build_routes("fraud", {"stable": 50, "canary": 50})
    assert all(again.choose(key, ("t", 9, 99)).name == name for key, name in first.items())


def test_moving_weight_only_moves_the_keys_it_must() -> None:
    before = build_routes("fraud", {"stable": 90, "canary": 10})
    after = build_routes("fraud", {"stable": 80, "canary": 20})
    moved = [
        k
        for k in keys(5000)
        if before.choose(k, ("t", 0, 0)).name != after.choose(k, ("t", 0, 0)).name
    ]
    # Cumulative buckets: only keys between 80% and 90% change, all towards canary.
    assert all(after.choose(k, ("t", 0, 0)).name == "canary" for k in moved)
    assert 0.08 < len(moved) / 5000 < 0.12


def test_zero_weight_and_all_or_nothing() -> None:
    routes = build_routes("fraud", {"stable": 0, "canary": 100})
    assert {routes.choose(k, ("t", 0, 0)).name for k in keys(1000)} == {"canary"}
    assert [t for t in routes.targets] == [Target("fraud", label="canary")]


def test_keyless_events_are_spread_by_weight_and_deterministic() -> None:
    routes = build_routes("fraud", {"a": 25, "b": 75})
    picks = [routes.choose(None, ("payments", 1, offset)).name for offset in range(8000)]
    assert 0.22 < picks.count("a") / 8000 < 0.28
    assert picks == [routes.choose(None, ("payments", 1, offset)).name for offset in range(8000)]


def test_shadow_fraction() -> None:
    routes = build_routes("fraud", {"stable": 100}, shadow=("canary", 0.1))
    mirrored = sum(1 for k in keys(20_000) if routes.shadowed(k, ("t", 0, 0)))
    assert 0.08 < mirrored / 20_000 < 0.12
    assert Target("fraud", label="canary") in routes.targets
    assert build_routes("fraud", {"stable": 100}).shadowed(b"k", ("t", 0, 0)) is None


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["stable"], "expected TARGET=WEIGHT"),
        (["stable=x"], "invalid literal"),
        (["stable=0"], "positive total weight"),
        (["stable=10", "stable=20"], "named twice"),
        (["stable=-5", "canary=10"], "cannot be negative"),
        (["stable=1", "shadow:canary=1.5"], "shadow fraction"),
        ([], "positive total weight"),
    ],
)
def test_bad_assignments(assignments: list[str], message: str) -> None:
    with pytest.raises(RoutesError, match=message):
        parse_assignments("fraud", assignments)


def test_control_record_round_trip() -> None:
    routes = parse_assignments("fraud", ["stable=90", "3=10", "shadow:canary=0.05"])
    again = parse_control_record(routes.to_json())
    assert again.describe() == routes.describe() == "stable=90 3=10 shadow:canary=0.05"
    assert again.routes[1].target == Target("fraud", version=3)


@pytest.mark.parametrize(
    "value", [b"not json", b"{}", b'{"model": 1, "routes": {}}', b'{"model": "m", "routes": []}']
)
def test_malformed_control_records(value: bytes) -> None:
    with pytest.raises(RoutesError):
        parse_control_record(value)
