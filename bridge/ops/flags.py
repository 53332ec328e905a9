"""The operator commands' shared flags and argument types (argparse)."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the TOML settings file bridge run takes (the environment overrides it)",
    )


def add_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help=f"{what}, in seconds (default: BRIDGE_SERVING__TIMEOUT_MS, 30 s)",
    )


def add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-config",
        type=Path,
        metavar="PATH",
        help="the models.config the server was started with (default: "
        "BRIDGE_SERVING__MODELS_CONFIG)",
    )
    parser.add_argument(
        "--grpc-target",
        metavar="H:P",
        help="TF Serving gRPC host:port (default: BRIDGE_SERVING__GRPC_TARGET, 127.0.0.1:8500)",
    )


def add_kafka(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="H:P[,H:P]",
        help="Kafka bootstrap servers (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--topic", help="the compacted control topic (default: BRIDGE_TOPICS__CONTROL)"
    )
