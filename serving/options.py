"""``tensorflow_model_server`` flags -> ``ServerOptions``.

Same flag names and defaults as upstream (``ts:model_servers/main.cc``,
``server.h``), so a container's argument list works unchanged. Both ``--flag=value``
and ``--flag value`` are accepted; booleans also take a bare ``--flag``.

One local-only flag: ``--host`` (default ``127.0.0.1``). Upstream listens on every
interface; a development server should not unless asked.

Every error is ``ServingError(INVALID_ARGUMENT, ...)``, the way upstream reports a
bad start (``Failed to start server. Error: INVALID_ARGUMENT: ...``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc

from serving.errors import ServingError


@dataclass(frozen=True)
class ServerOptions:
    """The server's settings, named after the upstream flags.

    Paths use ``""`` for "not set", as upstream does. The two poll intervals are
    floats so tests can poll faster than the integer flags allow.
    """

    port: int = 8500
    rest_api_port: int = 0  # 0 = REST off, as upstream
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0  # 0 = read once at start
    file_system_poll_wait_seconds: float = 1  # 0 = once at start, < 0 = never
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    grpc_max_threads: int | None = None  # None = upstream's 4 x schedulable CPUs
    enable_grpc_healthcheck_service: bool = False
    ssl_config_file: str = ""  # "" = plaintext gRPC
    host: str = "127.0.0.1"  # local only; upstream binds 0.0.0.0

    def resolved_grpc_max_threads(self) -> int:
        """``--grpc_max_threads``, or upstream's default when it was not given."""
        if self.grpc_max_threads is not None:
            return self.grpc_max_threads
        return 4 * (os.cpu_count() or 1)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _parse_bool(text: str) -> bool:
    # TensorFlow's flag parser takes these spellings for booleans.
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _invalid(f"{message} (see --help)")


_BOOL_FLAGS = (
    "enable_batching",
    "allow_version_labels_for_unavailable_models",
    "enable_grpc_healthcheck_service",
)
_INT_FLAGS = (
    "port",
    "rest_api_port",
    "rest_api_timeout_in_ms",
    "model_config_file_poll_wait_seconds",
    "file_system_poll_wait_seconds",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "grpc_max_threads",
)
_STR_FLAGS = (
    "model_name",
    "model_base_path",
    "model_config_file",
    "batching_parameters_file",
    "monitoring_config_file",
    "ssl_config_file",
    "host",
)


def _build_parser() -> _Parser:
    defaults = ServerOptions()
    parser = _Parser(
        prog="python -m serving",
        description="A local stand-in for tensorflow_model_server.",
        allow_abbrev=False,  # upstream matches flag names exactly
    )
    for name in _INT_FLAGS:
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in _STR_FLAGS:
        parser.add_argument(f"--{name}", type=str, default=getattr(defaults, name))
    for name in _BOOL_FLAGS:
        parser.add_argument(
            f"--{name}", type=_parse_bool, nargs="?", const=True, default=getattr(defaults, name)
        )
    return parser


def parse_args(argv: Sequence[str]) -> ServerOptions:
    """Parse ``tensorflow_model_server`` flags (without the program name)."""
    namespace = _build_parser().parse_args(list(argv))
    options = ServerOptions(**vars(namespace))
    if not options.model_base_path and not options.model_config_file:
        # Upstream's own message (server.cc).
        raise _invalid(
            "Both server_options.model_base_path and server_options.model_config_file are empty!"
        )
    if options.model_base_path and options.model_config_file:
        # Upstream silently ignores --model_base_path here; say so instead.
        raise _invalid(
            "--model_base_path and --model_config_file are mutually exclusive: "
            "serve one model with --model_name/--model_base_path, or several with "
            "--model_config_file"
        )
    if options.batching_parameters_file and not options.enable_batching:
        raise _invalid(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    return options
