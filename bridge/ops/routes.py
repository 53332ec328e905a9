"""``bridge routes show|set``: the routes per model on the control topic.

``set`` checks every target it names against the model server first (unless
``--no-check``): a label or version the server does not have is refused and
nothing is written, the same check the bridge makes before it takes new routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.domain import Target, UnsupportedSignatureError
from bridge.errors import ModelCallError, ServerUnavailableError
from bridge.ops.control import (
    ControlRecord,
    ModelRoutes,
    ensure_control_topic,
    latest_routes,
    read_control_topic,
    write_routes,
)
from bridge.ops.errors import CommandError
from bridge.ops.output import table
from bridge.pipeline.routing import Routes
from bridge.serving.client import ModelClient

FALLBACK = "the bridge uses its configured routes"


def _when(timestamp_ms: int) -> str:
    if timestamp_ms < 0:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _routes_text(routes: Routes | None) -> tuple[str, str]:
    if routes is None:
        return "-", "-"
    main = " ".join(f"{route.name}={route.weight}" for route in routes.routes)
    shadow = f"{routes.shadow.name}={routes.shadow.fraction:g}" if routes.shadow else "-"
    return main, shadow


def render_routes(
    state: dict[str, ModelRoutes], skipped: list[ControlRecord], topic: str, read: int
) -> str:
    lines = [f"control topic {topic}: {read} record(s) read, {len(state)} model(s)"]
    if state:
        rows = []
        for entry in state.values():
            main, shadow = _routes_text(entry.routes)
            if entry.deleted:
                main = f"(deleted: {FALLBACK})"
            rows.append(
                [entry.model, main, shadow, entry.latest.position, _when(entry.latest.timestamp_ms)]
            )
        lines.append(table(["MODEL", "ROUTES", "SHADOW", "LATEST RECORD", "WRITTEN"], rows))
    for entry in state.values():
        if entry.problem is not None:
            kept = "the routes shown are the last valid ones" if entry.routes else "none before it"
            lines.append(
                f"warning: the latest record for {entry.model} ({entry.latest.position}) is "
                f"malformed: {entry.problem}; {kept}"
            )
    if skipped:
        lines.append(f"warning: {len(skipped)} record(s) without a usable key were skipped")
    return "\n".join(lines)


def routes_json(
    state: dict[str, ModelRoutes], skipped: list[ControlRecord], topic: str, read: int
) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for entry in state.values():
        routes = entry.routes
        models[entry.model] = {
            "routes": {route.name: route.weight for route in routes.routes} if routes else None,
            "shadow": (
                {"target": routes.shadow.name, "fraction": routes.shadow.fraction}
                if routes and routes.shadow
                else None
            ),
            "deleted": entry.deleted,
            "problem": entry.problem,
            "partition": entry.latest.partition,
            "offset": entry.latest.offset,
            "timestamp_ms": entry.latest.timestamp_ms,
        }
    return {"topic": topic, "records": read, "skipped": len(skipped), "models": models}


@dataclass(frozen=True, slots=True)
class ShownRoutes:
    text: str
    json: dict[str, Any]


async def show_routes(
    bootstrap: str, topic: str, model: str | None, timeout_s: float
) -> ShownRoutes:
    records = await read_control_topic(bootstrap, topic, timeout_s)
    state, skipped = latest_routes(records)
    if model is not None:
        state = {name: entry for name, entry in state.items() if name == model}
        if not state:
            text = f"control topic {topic}: no routes for {model} ({FALLBACK})"
            return ShownRoutes(text, routes_json(state, [], topic, len(records)))
    return ShownRoutes(
        render_routes(state, skipped, topic, len(records)),
        routes_json(state, skipped, topic, len(records)),
    )


def named_targets(routes: Routes) -> list[tuple[str, Target]]:
    """Every target the routes name (weight 0 and shadow included), once each."""
    named = [(route.name, route.target) for route in routes.routes]
    if routes.shadow is not None:
        named.append((routes.shadow.name, routes.shadow.target))
    unique: dict[str, Target] = {}
    for name, target in named:
        unique.setdefault(name, target)
    return list(unique.items())


def _describe_target(target: Target) -> str:
    if target.label is not None:
        return f"label {target.label} of model {target.model}"
    return f"version {target.version} of model {target.model}"


async def check_targets(client: ModelClient, routes: Routes, signature: str, server: str) -> None:
    """Raise CommandError naming every target the server does not have."""
    problems: list[str] = []
    for _name, named in named_targets(routes):
        target = Target(named.model, named.label, named.version, signature)
        try:
            await client.get_signature(target)
        except ServerUnavailableError as exc:
            raise CommandError(
                f"cannot reach the model server at {server} to check the targets: {exc.message} "
                "(--no-check writes without checking)"
            ) from exc
        except ModelCallError as exc:
            problems.append(f"{_describe_target(target)}: {exc.status}: {exc.message}")
        except UnsupportedSignatureError as exc:
            problems.append(f"{_describe_target(target)}: {exc}")
    if problems:
        raise CommandError(
            f"refused: the model server at {server} does not serve every target; nothing was "
            "written:\n  " + "\n  ".join(problems)
        )


async def set_routes(
    bootstrap: str,
    topic: str,
    routes: Routes,
    replication_factor: int,
    timeout_s: float,
    say: Callable[[str], None],
) -> ControlRecord:
    for note in await ensure_control_topic(bootstrap, topic, replication_factor, timeout_s):
        say(note)
    value = routes.to_json()
    record = await write_routes(bootstrap, topic, routes.model, value, timeout_s)
    main, shadow = _routes_text(routes)
    say(
        f"wrote routes for {routes.model} to {topic} ({record.position}): {main}"
        + ("" if shadow == "-" else f" shadow:{shadow}")
    )
    say(f"  key {routes.model}  value {value.decode()}")
    return record
