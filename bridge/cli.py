"""``bridge`` command line: ``bridge run`` starts the service; ``bridge serving ...`` and
``bridge routes ...`` are the operator commands (``bridge/ops``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.ops.commands import add_commands
from bridge.settings import SettingsError, describe_settings, load_settings

GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def _settings_epilog() -> str:
    lines = ["settings (environment variables; a TOML --config file may set the same keys):", ""]
    for name, default, description in describe_settings():
        lines.append(f"  {name}")
        lines.append(f"      {description} [default: {default}]")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Kafka -> TensorFlow Serving -> Kafka, at-least-once."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="consume events, call the model, write results and failures",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, help="TOML file with settings (env overrides it)")
    add_commands(commands)  # bridge serving ..., bridge routes ...
    return parser


def _run(config: Path | None) -> int:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    # Imported after the settings are valid: a bad setting fails fast, without the Kafka stack.
    from bridge.app import Bridge
    from bridge.kafka.tls import ssl_context
    from bridge.logs import configure_logging
    from bridge.tracing import TracingSettingsError, start_tracing

    configure_logging(settings.log.level, settings.log.format)
    try:
        tracing = start_tracing(settings.kafka.group_id, settings.serving.protocol)
    except TracingSettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2

    async def serve() -> int:
        # Built inside the loop: grpc.aio channels bind to the loop they are made in.
        return await Bridge(settings, tracing=tracing).run()

    try:
        if settings.kafka.security_protocol.endswith("SSL"):
            ssl_context(settings.kafka)  # a key OpenSSL refuses stops here, before any call
        # What start-up made (modules, settings, clients' classes) lives as long as the
        # process: frozen out of the collector, a full collection no longer walks it.
        gc.freeze()
        # Every event makes a few short-lived containers (its instance, slot, output): at
        # the default threshold (700) the young generation is collected every ~100 events
        # and the middle one every ~1,000. A higher threshold leaves them to die by
        # refcount first; the offline pipeline (tools/pipeline_cpu.py) spends 0.4 instead
        # of 1.3 us per event in the collector. Cycles still get collected, just later.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        return asyncio.run(serve())
    except SettingsError as exc:  # TLS or SASL that cannot work (bridge.kafka.tls, .sasl)
        # args, not str(): a KafkaError's str() puts its class name first.
        print(f"bridge: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
