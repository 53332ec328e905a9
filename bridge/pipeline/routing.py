"""A/B routing between version labels and version numbers of one model. Pure.

Routes are a weighted list of targets, e.g. ``stable=90 canary=10``; a target is a
version label, or a version number written as digits. Assignment is sticky by
event key: a key's hash picks a point in [0, 10000) and the cumulative weights
pick the route, so the same key lands on the same target while the routes stay
the same. Events without a key are spread by weight, deterministically from
their position (topic, partition, offset), so a replay routes them the same way.

Shadow traffic mirrors a fraction of events to another target; its results go to
their own topic and never touch the main record or its commit.

On the control topic (compacted, key = model name) routes travel as JSON:
``{"model": "fraud", "routes": {"stable": 90, "canary": 10},
"shadow": {"target": "canary", "fraction": 0.05}}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.domain import Target

BUCKETS = 10_000


class RoutesError(ValueError):
    """Routes that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the label, or the version number as text
    target: Target
    weight: int


@dataclass(frozen=True, slots=True)
class Shadow:
    name: str
    target: Target
    fraction: float


LATEST = "latest"


def target_for(model: str, name: str, signature: str = "serving_default") -> Target:
    """``"canary"`` -> the label; ``"3"`` -> version 3; ``"latest"`` -> the newest version."""
    name = name.strip()
    if not name:
        raise RoutesError("a route needs a label or a version number")
    if name == LATEST:
        return Target(model, signature=signature)
    if name.isdigit():
        if int(name) <= 0:
            raise RoutesError(f"version {name} is not a positive number")
        return Target(model, version=int(name), signature=signature)
    return Target(model, label=name, signature=signature)


@dataclass(frozen=True)
class Routes:
    model: str
    routes: tuple[Route, ...]
    shadow: Shadow | None = None
    _cumulative: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _only: Route | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = sum(route.weight for route in self.routes)
        if not self.routes or total <= 0:
            raise RoutesError(f"routes for {self.model} need a positive total weight")
        names = [route.name for route in self.routes]
        if len(set(names)) != len(names):
            raise RoutesError(f"routes for {self.model} name a target twice: {names}")
        if any(route.weight < 0 for route in self.routes):
            raise RoutesError("route weights cannot be negative")
        if self.shadow is not None and not 0.0 < self.shadow.fraction <= 1.0:
            raise RoutesError("the shadow fraction must be in (0, 1]")
        running, cumulative = 0, []
        for route in self.routes:
            running += route.weight * BUCKETS // total
            cumulative.append(running)
        cumulative[-1] = BUCKETS  # rounding never leaves a gap at the end
        object.__setattr__(self, "_cumulative", tuple(cumulative))
        live = [route for route in self.routes if route.weight > 0]
        object.__setattr__(self, "_only", live[0] if len(live) == 1 else None)

    @property
    def only(self) -> Route | None:
        """The one route with weight, if there is just one: every event takes it."""
        return self._only

    @property
    def targets(self) -> list[Target]:
        """Every target these routes may call (shadow included)."""
        found = [route.target for route in self.routes if route.weight > 0]
        if self.shadow is not None:
            found.append(self.shadow.target)
        return found

    def named_targets(self) -> list[tuple[str, Target]]:
        """Every target the routes name (weight 0 and shadow included), once each."""
        named = [(route.name, route.target) for route in self.routes]
        if self.shadow is not None:
            named.append((self.shadow.name, self.shadow.target))
        unique: dict[str, Target] = {}
        for name, target in named:
            unique.setdefault(name, target)
        return list(unique.items())

    def choose(self, key: bytes | None, position: tuple[str, int, int]) -> Route:
        if self._only is not None:
            return self._only  # one live route: nothing to hash
        point = _bucket(key if key is not None else _position_bytes(position), b"route")
        for route, bound in zip(self.routes, self._cumulative, strict=True):
            if point < bound and route.weight > 0:
                return route
        return next(route for route in reversed(self.routes) if route.weight > 0)

    def shadowed(self, key: bytes | None, position: tuple[str, int, int]) -> Shadow | None:
        if self.shadow is None:
            return None
        point = _bucket(key if key is not None else _position_bytes(position), b"shadow")
        return self.shadow if point < self.shadow.fraction * BUCKETS else None

    # One text and one JSON form, for the bridge's logs, the control topic and the
    # operator commands alike.

    @property
    def weights_text(self) -> str:
        """``stable=90 canary=10``."""
        return " ".join(f"{route.name}={route.weight}" for route in self.routes)

    @property
    def shadow_text(self) -> str | None:
        """``canary=0.05``, or None without a shadow."""
        return f"{self.shadow.name}={self.shadow.fraction:g}" if self.shadow else None

    def describe(self) -> str:
        """``stable=90 canary=10 shadow:canary=0.05``: what ``bridge routes set`` takes."""
        shadow = self.shadow_text
        return self.weights_text + ("" if shadow is None else f" shadow:{shadow}")

    def as_dict(self) -> dict[str, Any]:
        """The control record's body: ``{"model", "routes", "shadow"?}``."""
        body: dict[str, Any] = {
            "model": self.model,
            "routes": {route.name: route.weight for route in self.routes},
        }
        if self.shadow is not None:
            body["shadow"] = {"target": self.shadow.name, "fraction": self.shadow.fraction}
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())


def _bucket(data: bytes, salt: bytes) -> int:
    # blake2b, not hash(): stable across processes and Python versions.
    digest = hashlib.blake2b(data, digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _position_bytes(position: tuple[str, int, int]) -> bytes:
    topic, partition, offset = position
    return f"{topic}/{partition}/{offset}".encode()


def build_routes(
    model: str,
    weights: Mapping[str, int],
    shadow: tuple[str, float] | None = None,
    signature: str = "serving_default",
) -> Routes:
    routes = tuple(
        Route(name, target_for(model, name, signature), int(weight))
        for name, weight in weights.items()
    )
    mirror = None
    if shadow is not None:
        name, fraction = shadow
        mirror = Shadow(name, target_for(model, name, signature), float(fraction))
    return Routes(model, routes, mirror)


def parse_assignments(model: str, assignments: Iterable[str]) -> Routes:
    """``["stable=90", "canary=10", "shadow:canary=0.05"]`` (the CLI's form)."""
    weights: dict[str, int] = {}
    shadow: tuple[str, float] | None = None
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise RoutesError(f"{item!r}: expected TARGET=WEIGHT")
        try:
            if name.startswith("shadow:"):
                shadow = (name.removeprefix("shadow:"), float(value))
            else:
                if name in weights:
                    raise RoutesError(f"{name} is named twice")
                weights[name] = int(value)
        except ValueError as exc:
            raise RoutesError(f"{item!r}: {exc}") from exc
    return build_routes(model, weights, shadow)


def parse_control_record(value: bytes, signature: str = "serving_default") -> Routes:
    """A control-topic value -> Routes (RoutesError says what is wrong)."""
    try:
        body = orjson.loads(value)
        model = body["model"]
        weights = body["routes"]
        shadow_body = body.get("shadow")
        shadow = (shadow_body["target"], shadow_body["fraction"]) if shadow_body else None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise RoutesError(f"malformed routes record: {exc!r}") from exc
    if not isinstance(model, str) or not isinstance(weights, dict):
        raise RoutesError("malformed routes record: model must be a string and routes an object")
    return build_routes(model, weights, shadow, signature)
