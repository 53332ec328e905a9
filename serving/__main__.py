"""``python -m serving <tensorflow_model_server flags>``: the local TF Serving stand-in.

Startup order is upstream's: every initially configured model is loaded (or has
failed) before any port opens, so a client that can connect finds the models
AVAILABLE. A failed start prints ``Failed to start server. Error: CODE: message``
and exits 1. SIGTERM and SIGINT stop the server cleanly (exit 0). Both front ends
share one asyncio loop; TensorFlow work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import grpc
from aiohttp import web

from serving import grpc_api, model_config
from serving.batching import Batcher, BatchingOptions
from serving.errors import ServingError
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.options import ServerOptions, parse_args
from serving.rest_api import RestApi, build_app
from serving.ssl_config import read_ssl_config, server_credentials

log = logging.getLogger("serving")

# Upstream's default when prometheus_config.path is empty.
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _fail(error: ServingError) -> int:
    # Upstream prints the status to stdout and exits non-zero.
    print(f"Failed to start server. Error: {error.code.name}: {error.message}", flush=True)
    return 1


def _metrics_path(options: ServerOptions) -> str | None:
    if not options.monitoring_config_file:
        return None
    config = model_config.read_monitoring_config(options.monitoring_config_file)
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return str(prometheus.path) or DEFAULT_METRICS_PATH


def _batcher(options: ServerOptions) -> Batcher | None:
    if not options.enable_batching:
        return None
    if not options.batching_parameters_file:
        return Batcher(BatchingOptions())
    params = model_config.read_batching_parameters(options.batching_parameters_file)
    return Batcher(BatchingOptions.from_proto(params))


@contextlib.asynccontextmanager
async def _grpc_server(
    options: ServerOptions,
    manager: ModelManager,
    batcher: Batcher | None,
    metrics: Metrics,
    credentials: grpc.ServerCredentials | None,
) -> AsyncIterator[grpc.aio.Server]:
    server = await grpc_api.build_server(
        manager,
        batcher,
        metrics,
        max_threads=options.resolved_grpc_max_threads(),
        health=options.enable_grpc_healthcheck_service,
    )
    address = f"{options.host}:{options.port}"
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ServingError(
            grpc.StatusCode.UNKNOWN, f"Failed to BuildAndStart gRPC server at {address}"
        ) from exc
    await server.start()
    log.info("Running gRPC ModelServer at %s ...", address)
    try:
        yield server
    finally:
        # In-flight calls get a moment to finish; new ones are refused.
        await server.stop(grace=5)


@contextlib.asynccontextmanager
async def _rest_server(
    options: ServerOptions, manager: ModelManager, batcher: Batcher | None, metrics: Metrics
) -> AsyncIterator[None]:
    if options.rest_api_port <= 0:
        yield
        return
    api = RestApi(manager, batcher, metrics, timeout_ms=options.rest_api_timeout_in_ms)
    runner = web.AppRunner(build_app(api, metrics, _metrics_path(options)), access_log=None)
    await runner.setup()
    address = f"{options.host}:{options.rest_api_port}"
    try:
        await web.TCPSite(runner, options.host, options.rest_api_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ServingError(
            grpc.StatusCode.UNKNOWN, f"Failed to start HTTP Server at {address}"
        ) from exc
    log.info("Exporting HTTP/REST API at:%s ...", address)
    try:
        yield
    finally:
        await runner.cleanup()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(options: ServerOptions) -> int:
    """Load, open the ports, serve until SIGTERM/SIGINT; the process exit code."""
    stop = _stop_event()
    try:
        if options.model_config_file:
            config = model_config.read_model_server_config(options.model_config_file)
        else:
            config = model_config.single_model_config(options.model_name, options.model_base_path)
        metrics_path = _metrics_path(options)  # read now so a bad file fails the start
        batcher = _batcher(options)
        # Read before any model loads, so a bad file fails the start at once.
        credentials = (
            server_credentials(read_ssl_config(options.ssl_config_file))
            if options.ssl_config_file
            else None
        )
    except ServingError as exc:
        return _fail(exc)

    manager = ModelManager(options)
    metrics = Metrics(lambda: dict(manager.load_attempts))
    try:
        await manager.start(config)
        async with (
            _grpc_server(options, manager, batcher, metrics, credentials),
            _rest_server(options, manager, batcher, metrics),
        ):
            if metrics_path is not None:
                log.info("Prometheus metrics at %s", metrics_path)
            await stop.wait()
            log.info("Shutting down")
    except ServingError as exc:
        return _fail(exc)
    finally:
        if batcher is not None:
            await batcher.close()
        await manager.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except ServingError as exc:
        return _fail(exc)
    return asyncio.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())
