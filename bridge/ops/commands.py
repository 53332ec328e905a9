"""``bridge serving ...``, ``bridge routes ...`` and ``bridge failures replay``: argparse
wiring and exit codes.

``bridge.cli`` calls ``add_commands(subparsers)`` and then ``args.handler(args)``.
Settings come from ``OpsSettings``: the same ``BRIDGE_*`` environment and ``--config``
TOML file as ``bridge run`` (what the commands do not use is ignored); flags override them.

Exit codes: 0 done, 1 refused or failed, 2 usage or settings errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bridge.ops.errors import CommandError, UsageError
from bridge.ops.failures import add_failures
from bridge.ops.flags import add_config, add_kafka, add_server, add_timeout, positive_int
from bridge.pipeline.routing import RoutesError, parse_assignments
from bridge.settings import OpsKafka, OpsSettings, SettingsError, load_ops_settings

if TYPE_CHECKING:
    from bridge.serving.client import ModelClient

# The commands' own modules (grpc, aiokafka) are imported by the handlers that use
# them, so `bridge run` does not pay for the operator commands at start.

Handler = Callable[[argparse.Namespace], int]


def say(text: str) -> None:
    print(text, flush=True)


# -- settings -----------------------------------------------------------------


def _settings(args: argparse.Namespace) -> OpsSettings:
    try:
        return load_ops_settings(args.config)
    except SettingsError as exc:
        raise UsageError(str(exc)) from exc


def _timeout_s(args: argparse.Namespace, settings: OpsSettings) -> float:
    timeout: float | None = args.timeout
    return timeout if timeout is not None else settings.serving.timeout_ms / 1000


def _grpc_target(args: argparse.Namespace, settings: OpsSettings) -> str:
    return str(args.grpc_target or settings.serving.grpc_target)


def _models_config(args: argparse.Namespace, settings: OpsSettings) -> Path | None:
    path: Path | None = args.models_config or settings.serving.models_config
    return path


def _max_message_bytes(settings: OpsSettings) -> int:
    return settings.serving.max_message_mb * 1024 * 1024


def _kafka(args: argparse.Namespace, settings: OpsSettings) -> tuple[OpsKafka, str]:
    """The bridge's connection and security settings, with the flag's servers if given."""
    kafka = settings.kafka
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    topic = args.topic or settings.topics.control
    if not kafka.bootstrap_servers:
        raise UsageError("set BRIDGE_KAFKA__BOOTSTRAP_SERVERS or pass --bootstrap-servers")
    if not topic:
        raise UsageError("set BRIDGE_TOPICS__CONTROL or pass --topic")
    return kafka, str(topic)


def _run(command: str, body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command's coroutine; a CommandError becomes its message and exit code."""
    try:
        return asyncio.run(body())
    except CommandError as exc:
        print(f"bridge {command}: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"bridge {command}: interrupted", file=sys.stderr, flush=True)
        return 130  # the shell's code for SIGINT


# -- serving status -------------------------------------------------------------


def run_serving_status(args: argparse.Namespace) -> int:
    from bridge.ops.labels import read_models_config
    from bridge.ops.models_config import model_names
    from bridge.ops.status import fill_versions, render_status, reports_from_config
    from bridge.serving.grpc_client import GrpcModelClient

    async def body() -> int:
        settings = _settings(args)
        path = _models_config(args, settings)
        target = _grpc_target(args, settings)
        if path is None and args.model is None:
            raise UsageError(
                "set BRIDGE_SERVING__MODELS_CONFIG or pass --models-config "
                "(or name a MODEL to see its versions without labels)"
            )
        config = read_models_config(path)[1] if path is not None else None
        reports = reports_from_config(config, args.model)
        client = GrpcModelClient(
            target, _timeout_s(args, settings), _max_message_bytes(settings), settings.serving.tls()
        )
        try:
            await fill_versions(reports, client.model_service)
        finally:
            await client.aclose()
        if args.json:
            document = {
                "server": target,
                "models_config": str(path) if path is not None else None,
                "models": [report.to_json() for report in reports],
            }
            say(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        else:
            in_config = set(model_names(config)) if config is not None else set()
            say(render_status(reports, target, path, in_config))
        return 1 if any(report.error for report in reports) else 0

    return _run("serving status", body)


# -- serving label --------------------------------------------------------------


def run_serving_label(args: argparse.Namespace) -> int:
    from bridge.ops.labels import LabelMove, move_label

    async def body() -> int:
        settings = _settings(args)
        path = _models_config(args, settings)
        if path is None:
            raise UsageError("set BRIDGE_SERVING__MODELS_CONFIG or pass --models-config")
        label = args.label.strip()
        if not label or label.isdigit():
            raise UsageError(
                f"{args.label!r} cannot be a label: it must be a non-empty name that is not a "
                "number (routes read digits as a version)"
            )
        move = LabelMove(
            model=args.model,
            label=label,
            version=args.version,
            models_config=path,
            grpc_target=_grpc_target(args, settings),
            timeout_s=_timeout_s(args, settings),
            unload_unlabelled=args.unload_unlabelled,
            max_message_bytes=_max_message_bytes(settings),
            tls=settings.serving.tls(),
        )
        await move_label(move, say)
        return 0

    return _run("serving label", body)


# -- routes show / set ----------------------------------------------------------


def run_routes_show(args: argparse.Namespace) -> int:
    from bridge.ops.routes import show_routes

    async def body() -> int:
        settings = _settings(args)
        kafka, topic = _kafka(args, settings)
        shown = await show_routes(kafka, topic, args.model, _timeout_s(args, settings))
        if args.json:
            say(orjson.dumps(shown.json, option=orjson.OPT_INDENT_2).decode())
        else:
            say(shown.text)
        return 0

    return _run("routes show", body)


def _model_client(args: argparse.Namespace, settings: OpsSettings) -> tuple[ModelClient, str]:
    from bridge.serving.grpc_client import GrpcModelClient
    from bridge.serving.rest_client import RestModelClient

    protocol = args.protocol or settings.serving.protocol
    timeout_s = _timeout_s(args, settings)
    if protocol == "rest":
        from bridge.serving.tls import ServingTlsError

        url = str(args.rest_url or settings.serving.rest_url)
        connect_s = min(timeout_s, settings.serving.connect_timeout_ms / 1000)
        try:
            tls = settings.serving.tls()
            return RestModelClient(url, timeout_s, connect_timeout_s=connect_s, tls=tls), url
        except ServingTlsError as exc:  # --rest-url http://... with SSL_CAFILE set
            raise UsageError(str(exc)) from exc
    target = _grpc_target(args, settings)
    tls = settings.serving.tls()
    return GrpcModelClient(target, timeout_s, _max_message_bytes(settings), tls), target


def run_routes_set(args: argparse.Namespace) -> int:
    from bridge.ops.routes import check_targets, set_routes

    async def body() -> int:
        settings = _settings(args)
        kafka, topic = _kafka(args, settings)
        try:
            routes = parse_assignments(args.model, args.assignments)
        except RoutesError as exc:
            raise UsageError(str(exc)) from exc
        if args.no_check:
            say("not checking the targets against the model server (--no-check)")
        else:
            client, server = _model_client(args, settings)
            try:
                await check_targets(client, routes, args.signature, server)
            finally:
                await client.aclose()
        await set_routes(
            kafka, topic, routes, args.replication_factor, _timeout_s(args, settings), say
        )
        return 0

    return _run("routes set", body)


def run_routes_delete(args: argparse.Namespace) -> int:
    from bridge.ops.routes import delete_routes

    async def body() -> int:
        settings = _settings(args)
        kafka, topic = _kafka(args, settings)
        await delete_routes(kafka, topic, args.model, _timeout_s(args, settings), say)
        return 0

    return _run("routes delete", body)


# -- failures replay ------------------------------------------------------------


def run_failures_replay(args: argparse.Namespace) -> int:
    from bridge.ops.failures import replay_from_args

    async def body() -> int:
        return await replay_from_args(args, _settings(args), say)

    return _run("failures replay", body)


# -- argparse -------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``serving`` and ``routes``; every leaf sets ``handler(args) -> int``."""
    serving = subparsers.add_parser(
        "serving",
        help="TF Serving versions and labels (status, label)",
        description="Inspect the model server and move version labels (over gRPC: TF "
        "Serving's REST API has no config reload).",
    )
    serving_commands = serving.add_subparsers(dest="serving_command", required=True)

    status = serving_commands.add_parser(
        "status",
        help="versions with their state, and the labels from models.config",
        description="GetModelStatus for MODEL (or every model in models.config), highest "
        "version first, with the labels of the models.config the server was given (TF "
        "Serving has no API that lists labels).",
    )
    status.add_argument("model", nargs="?", metavar="MODEL")
    add_server(status)
    add_config(status)
    add_timeout(status, "deadline of each call")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=run_serving_status)

    label = serving_commands.add_parser(
        "label",
        help="point a version label at a version, safely (two reloads)",
        description="Move LABEL of MODEL to VERSION as TF Serving documents: reload a "
        "config that also loads VERSION, wait until it is AVAILABLE, reload with the label "
        "moved, then rewrite models.config (temporary file + rename). If a step fails the "
        "previous config is reloaded and the file is left alone. The version the label "
        "leaves stays loaded.",
    )
    label.add_argument("model", metavar="MODEL")
    label.add_argument("label", metavar="LABEL")
    label.add_argument("version", metavar="VERSION", type=positive_int)
    add_server(label)
    add_config(label)
    add_timeout(label, "how long VERSION may take to become AVAILABLE, and each call's deadline")
    label.add_argument(
        "--unload-unlabelled",
        action="store_true",
        help="afterwards, drop versions no label points at from the version policy",
    )
    label.set_defaults(handler=run_serving_label)

    routes = subparsers.add_parser(
        "routes",
        help="A/B routes on the control topic (show, set, delete)",
        description="Read and write the routes the bridges take from the control topic.",
    )
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)

    show = routes_commands.add_parser(
        "show",
        help="the routes in force per model",
        description="Read the control topic to its end (no consumer group) and print the "
        "latest routes per model: the last record per key wins, a null value deletes.",
    )
    show.add_argument("model", nargs="?", metavar="MODEL")
    add_kafka(show)
    add_config(show)
    add_timeout(show, "how long reading may take")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=run_routes_show)

    set_ = routes_commands.add_parser(
        "set",
        help="write new routes for a model",
        description="Write MODEL's routes to the control topic (key MODEL, acks=all), e.g. "
        "'stable=90 canary=10 shadow:canary=0.05'. A target is a label or a version number. "
        "Every target is checked against the model server first; one it does not have "
        "refuses the change and nothing is written. The topic is created compacted if missing.",
    )
    set_.add_argument("model", metavar="MODEL")
    set_.add_argument(
        "assignments", nargs="+", metavar="TARGET=WEIGHT", help="and shadow:TARGET=FRACTION"
    )
    add_kafka(set_)
    set_.add_argument("--no-check", action="store_true", help="do not ask the model server")
    set_.add_argument(
        "--protocol", choices=["grpc", "rest"], help="default: BRIDGE_SERVING__PROTOCOL, grpc"
    )
    set_.add_argument("--grpc-target", metavar="H:P", help="default: BRIDGE_SERVING__GRPC_TARGET")
    set_.add_argument("--rest-url", metavar="URL", help="default: BRIDGE_SERVING__REST_URL")
    set_.add_argument(
        "--signature",
        default="serving_default",
        help="signature the targets must have (default: serving_default)",
    )
    set_.add_argument(
        "--replication-factor",
        type=positive_int,
        metavar="N",
        default=1,
        help="when the control topic is created (default: 1; use 3 on a production cluster)",
    )
    add_config(set_)
    add_timeout(set_, "deadline of the checks and of the write")
    set_.set_defaults(handler=run_routes_set)

    delete = routes_commands.add_parser(
        "delete",
        help="drop a model's routes: the bridges go back to their settings' routes",
        description="Write a tombstone for MODEL to the control topic (key MODEL, null value, "
        "acks=all): every bridge that follows the topic goes back to the routes its settings "
        "give. A model the topic has no routes for is refused; the topic is never created.",
    )
    delete.add_argument("model", metavar="MODEL")
    add_kafka(delete)
    add_config(delete)
    add_timeout(delete, "deadline of the read and of the write")
    delete.set_defaults(handler=run_routes_delete)
    add_failures(subparsers, run_failures_replay)  # bridge failures replay


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the operator commands (tests; ``bridge.cli`` has the full one)."""
    parser = argparse.ArgumentParser(prog="bridge")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
