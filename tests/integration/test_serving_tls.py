"""The bridge to a TF Serving that speaks TLS (``--ssl_config_file``), over gRPC.

Two local model servers with certificates made for the module: one with
``client_verify: false`` (TLS), one with ``client_verify: true`` (mTLS). The bridge
delivers every event to each, ``bridge serving status`` answers with the same
environment, and a bridge without a client certificate is held by the outage logic
and says in its log why the server looks unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_io import Outputs, Producer, make_topics, payment_items
from tests.integration.procs import Bridges, demo_server, log_events
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env
from tools.harness.tls import Certs, make_certs

pytestmark = pytest.mark.integration

EVENTS = 60
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs
) -> Iterator[dict[str, ModelServer]]:
    """The demo server with TLS ("tls") and with client_verify ("mtls"), stopped by pid."""
    with contextlib.ExitStack() as stack:
        running = {}
        for mode in ("tls", "mtls"):
            root = tmp_path_factory.mktemp(mode)
            server = demo_server(root)
            ssl_config = certs.write_ssl_config(root / "ssl.config", client_verify=mode == "mtls")
            server.flags.append(f"--ssl_config_file={ssl_config}")
            stack.callback(server.stop)
            running[mode] = server.start()  # REST stays plain HTTP: readiness is polled there
        yield running


def _tls_env(certs: Certs, *, client_cert: bool) -> dict[str, str]:
    env = {"BRIDGE_SERVING__SSL_CAFILE": str(certs.ca)}
    if client_cert:
        env["BRIDGE_SERVING__SSL_CERTFILE"] = str(certs.client_cert)
        env["BRIDGE_SERVING__SSL_KEYFILE"] = str(certs.client_key)
    return env


@pytest.mark.parametrize("mode", ["tls", "mtls"])
async def test_delivers_over_tls_and_serving_status_works(
    kafka_bootstrap: str,
    topic_prefix: str,
    servers: dict[str, ModelServer],
    certs: Certs,
    bridges: Bridges,
    mode: str,
) -> None:
    server = servers[mode]
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    tls = _tls_env(certs, client_cert=mode == "mtls")
    env = bridge_env(kafka_bootstrap, topics.names, server, group=topics.group, **tls)
    bridge = await bridges.start_assigned(env)
    async with Producer(kafka_bootstrap) as producer, Outputs.of(kafka_bootstrap, topics) as out:
        sent = await producer.send_all(topics.input, payment_items(EVENTS, seed=3))
        await out.wait_until(
            lambda o: len(o.results) + len(o.failures) >= len(sent),
            f"{len(sent)} outputs",
            60,
            bridge.output,
        )
    assert not out.failures, [f.header("__connect.errors.exception.message") for f in out.failures]
    assert len(out.results) == EVENTS
    assert not log_events(bridge, "model_server_unreachable")

    # The operator command, from the same environment (the models.config beside it).
    status_env = {
        **os.environ,
        **env,
        "BRIDGE_SERVING__MODELS_CONFIG": str(server.log_path.parent / "models.config"),
    }
    done = await asyncio.to_thread(_serving_status, status_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fraud" in done.stdout
    assert "AVAILABLE" in done.stdout

    # Plaintext against the same server is refused: TLS was really on.
    plain = {**status_env}
    for name in tls:
        plain.pop(name)
    done = await asyncio.to_thread(_serving_status, plain)
    assert done.returncode != 0, done.stdout


async def test_no_client_certificate_holds_and_says_why(
    kafka_bootstrap: str,
    topic_prefix: str,
    servers: dict[str, ModelServer],
    certs: Certs,
    bridges: Bridges,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    tls = _tls_env(certs, client_cert=False)
    env = bridge_env(kafka_bootstrap, topics.names, servers["mtls"], group=topics.group, **tls)
    bridge = bridges.start(env)
    async with Producer(kafka_bootstrap) as producer, Outputs.of(kafka_bootstrap, topics) as out:
        await producer.send_all(topics.input, payment_items(10, seed=5))
        await _wait_log(bridge, "model_server_unreachable")
        await _wait_log(bridge, "model_server_down")
        await out.poll()
        assert not out.results and not out.failures, "nothing is delivered, nothing fails"
    assert bridge.process is not None and bridge.process.poll() is None, bridge.output()
    (unreachable,) = log_events(bridge, "model_server_unreachable")[:1]
    assert "Socket closed" in unreachable["detail"]
    assert "TLS handshake failure" in unreachable["hint"]
    assert "client_verify" in unreachable["hint"]
    assert "BRIDGE_SERVING__SSL_CERTFILE" in unreachable["hint"]


def _serving_status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "serving", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _wait_log(bridge: BridgeProcess, event: str) -> None:
    await asyncio.to_thread(bridge.wait_for_log, event, 60)
