"""``bridge routes show|set|delete``: the routes per model on the control topic.

``set`` checks every target it names against the model server first (unless
``--no-check``): a label or version the server does not have is refused and
nothing is written, the same check the bridge makes before it takes new routes.
``delete`` writes a tombstone, which sends every bridge back to its settings' routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.domain import Target, UnsupportedSignatureError
from bridge.errors import ModelCallError, ServerUnavailableError
from bridge.kafka.control_topic import ControlRecord, ControlState, ModelRoutes
from bridge.ops.control import ensure_control_topic, read_control_topic, write_routes
from bridge.ops.errors import CommandError
from bridge.ops.output import table
from bridge.pipeline.routing import Routes
from bridge.serving.client import ModelClient
from bridge.settings import KafkaConnection

FALLBACK = "the bridge uses its configured routes"


def _when(timestamp_ms: int) -> str:
    if timestamp_ms < 0:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _row(entry: ModelRoutes) -> list[str]:
    routes = entry.routes
    main = routes.weights_text if routes is not None else "-"
    if entry.deleted:
        main = f"(deleted: {FALLBACK})"
    shadow = (routes.shadow_text if routes is not None else None) or "-"
    return [entry.model, main, shadow, entry.latest.position, _when(entry.latest.timestamp_ms)]


def render_routes(state: ControlState, topic: str) -> str:
    lines = [f"control topic {topic}: {state.read} record(s) read, {len(state.models)} model(s)"]
    if state.models:
        rows = [_row(entry) for entry in state.models.values()]
        lines.append(table(["MODEL", "ROUTES", "SHADOW", "LATEST RECORD", "WRITTEN"], rows))
    for entry in state.models.values():
        if entry.problem is not None:
            kept = "the routes shown are the last valid ones" if entry.routes else "none before it"
            lines.append(
                f"warning: the latest record for {entry.model} ({entry.latest.position}) is "
                f"malformed: {entry.problem}; {kept}"
            )
    if state.skipped:
        lines.append(f"warning: {len(state.skipped)} record(s) without a usable key were skipped")
    if state.unreadable is not None:
        lines.append(
            f"warning: reading stopped at a record the client cannot read ({state.unreadable}); "
            "what is shown comes before it"
        )
    return "\n".join(lines)


def routes_json(state: ControlState, topic: str) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for entry in state.models.values():
        body = entry.routes.as_dict() if entry.routes is not None else {}
        models[entry.model] = {
            "routes": body.get("routes"),
            "shadow": body.get("shadow"),
            "deleted": entry.deleted,
            "problem": entry.problem,
            "partition": entry.latest.partition,
            "offset": entry.latest.offset,
            "timestamp_ms": entry.latest.timestamp_ms,
        }
    return {
        "topic": topic,
        "records": state.read,
        "skipped": len(state.skipped),
        "unreadable": state.unreadable,
        "models": models,
    }


@dataclass(frozen=True, slots=True)
class ShownRoutes:
    text: str
    json: dict[str, Any]


async def show_routes(
    kafka: KafkaConnection, topic: str, model: str | None, timeout_s: float
) -> ShownRoutes:
    state = await read_control_topic(kafka, topic, timeout_s)
    if model is not None:
        only = {name: entry for name, entry in state.models.items() if name == model}
        state = ControlState(only, [], state.read, state.unreadable)
        if not only:
            text = f"control topic {topic}: no routes for {model} ({FALLBACK})"
            return ShownRoutes(text, routes_json(state, topic))
    return ShownRoutes(render_routes(state, topic), routes_json(state, topic))


def _describe_target(target: Target) -> str:
    if target.label is not None:
        return f"label {target.label} of model {target.model}"
    return f"version {target.version} of model {target.model}"


async def check_targets(client: ModelClient, routes: Routes, signature: str, server: str) -> None:
    """Raise CommandError naming every target the server does not have."""
    problems: list[str] = []
    for _name, named in routes.named_targets():
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
    kafka: KafkaConnection,
    topic: str,
    routes: Routes,
    replication_factor: int,
    timeout_s: float,
    say: Callable[[str], None],
) -> ControlRecord:
    for note in await ensure_control_topic(kafka, topic, replication_factor, timeout_s):
        say(note)
    before = (await read_control_topic(kafka, topic, timeout_s)).models.get(routes.model)
    value = routes.to_json()
    record = await write_routes(kafka, topic, routes.model, value, timeout_s)
    say(f"wrote routes for {routes.model} to {topic} ({record.position}): {routes.describe()}")
    say(f"  key {routes.model}  value {value.decode()}")
    say(f"  replaced {_in_force(before)}")
    return record


def _in_force(entry: ModelRoutes | None) -> str:
    if entry is None or entry.routes is None:
        return f"no routes ({FALLBACK})"
    return entry.routes.describe()


async def delete_routes(
    kafka: KafkaConnection, topic: str, model: str, timeout_s: float, say: Callable[[str], None]
) -> ControlRecord | None:
    """Write the tombstone (key MODEL, null value): every bridge goes back to its settings.

    A model the topic never had routes for is refused (a mistyped name would
    otherwise "succeed"); one whose routes are deleted already gets nothing new.
    Never creates the topic: without it the bridges use their settings anyway.
    """
    state = await read_control_topic(kafka, topic, timeout_s)
    before = state.models.get(model)
    if before is None:
        known = ", ".join(name for name, e in state.models.items() if not e.deleted) or "none"
        raise CommandError(
            f"refused: control topic {topic} has no routes for {model} (models with routes: "
            f"{known}); nothing was written"
        )
    if before.deleted:
        where = before.latest.position
        say(f"routes for {model} on {topic} are deleted already ({where}): nothing was written")
        return None
    record = await write_routes(kafka, topic, model, None, timeout_s)
    say(f"deleted routes for {model} on {topic} ({record.position}): {FALLBACK}")
    say(f"  key {model}  value null (a tombstone)")
    say(f"  replaced {_in_force(before)}")
    return record
