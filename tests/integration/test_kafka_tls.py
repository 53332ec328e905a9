"""Kafka over TLS and mTLS, against the dev broker behind a real TLS terminator.

stunnel4 (``tools.harness.tls``) accepts TLS on a loopback port and forwards to the
broker, which advertises stunnel's port, so every connection after bootstrap goes
through TLS too. Certificates are made per module with ``openssl``. The test's own
clients (topics, input, reading the outputs) use the same CA and client certificate.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.procs import Bridges
from tools.harness.broker import DevBroker, free_port
from tools.harness.processes import ModelServer, bridge_env, run_bridge
from tools.harness.secured import make_topics, read_outputs, send_events
from tools.harness.tls import Certs, Stunnel, make_certs, stunnel_binary

pytestmark = pytest.mark.integration

EVENTS = 30


class Cluster:
    def __init__(self, bootstrap: str, certs: Certs, mtls: bool) -> None:
        self.bootstrap, self.certs, self.mtls = bootstrap, certs, mtls

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SSL",
            "BRIDGE_KAFKA__SSL_CAFILE": str(self.certs.ca),
        }
        if self.mtls:
            env["BRIDGE_KAFKA__SSL_CERTFILE"] = str(self.certs.client_cert)
            env["BRIDGE_KAFKA__SSL_KEYFILE"] = str(self.certs.client_key)
        return {**env, **overrides}

    def options(self) -> dict[str, object]:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        if self.mtls:
            context.load_cert_chain(self.certs.client_cert, self.certs.client_key)
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SSL",
            "ssl_context": context,
        }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if stunnel_binary() is None:
        pytest.skip("needs stunnel4 on PATH (apt-get install stunnel4; `make test` installs it)")
    return make_certs(tmp_path_factory.mktemp("certs"))


def _cluster(certs: Certs, mtls: bool) -> Iterator[Cluster]:
    tls_port = free_port()
    with (
        DevBroker(advertised_port=tls_port) as broker,
        Stunnel(certs, tls_port, broker.port, mtls=mtls),
    ):
        yield Cluster(f"127.0.0.1:{tls_port}", certs, mtls)


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs) -> Iterator[Cluster]:
    yield from _cluster(certs, mtls=False)


@pytest.fixture(scope="module")
def mtls_cluster(certs: Certs) -> Iterator[Cluster]:
    yield from _cluster(certs, mtls=True)


async def delivers_every_event(
    cluster: Cluster, prefix: str, server: ModelServer, bridges: Bridges
) -> None:
    source, results, failures = await make_topics(cluster.options(), prefix)
    sent = await send_events(cluster.options(), source, EVENTS, seed=3)
    env = bridge_env(
        cluster.bootstrap, (source, results, failures), server, group=f"{prefix}-g", **cluster.env()
    )
    bridge = await bridges.start_assigned(env)
    outputs = await read_outputs(cluster.options(), (results, failures), len(sent))
    assert [o for o in outputs if o[0] == failures] == []
    got = [(o[1]["source"]["partition"], o[1]["source"]["offset"]) for o in outputs]  # type: ignore[index]
    assert sorted(got) == sorted(sent)  # every event, one record each
    assert bridge.stop() == 0


async def test_the_bridge_delivers_every_event_over_tls(
    tls_cluster: Cluster, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    await delivers_every_event(tls_cluster, topic_prefix, model_server, bridges)


async def test_the_bridge_delivers_every_event_over_mtls(
    mtls_cluster: Cluster, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    await delivers_every_event(mtls_cluster, topic_prefix, model_server, bridges)


def test_routes_set_and_show_over_mtls(mtls_cluster: Cluster, topic_prefix: str) -> None:
    env = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": mtls_cluster.bootstrap,
        "BRIDGE_TOPICS__CONTROL": f"{topic_prefix}-control",
        **mtls_cluster.env(),
    }
    done = run_bridge(env, "routes", "set", "fraud", "stable=70", "canary=30", "--no-check")
    assert done.returncode == 0, done.stderr
    shown = run_bridge(env, "routes", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["models"]["fraud"]["routes"] == {"stable": 70, "canary": 30}


@pytest.mark.parametrize("command", [("routes", "show"), ("routes", "set", "fraud", "stable=1")])
def test_the_commands_name_the_setting_a_refused_tls_session_points_at(
    tls_cluster: Cluster, topic_prefix: str, certs: Certs, command: tuple[str, ...]
) -> None:
    env = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": tls_cluster.bootstrap,
        "BRIDGE_TOPICS__CONTROL": f"{topic_prefix}-control",
        **tls_cluster.env(BRIDGE_KAFKA__SSL_CAFILE=str(certs.other_ca)),
    }
    done = (
        run_bridge(env, *command, "--no-check") if "set" in command else run_bridge(env, *command)
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "not trusted" in done.stderr and "BRIDGE_KAFKA__SSL_CAFILE" in done.stderr, done.stderr


def refused_at_start(cluster: Cluster, server: ModelServer, **overrides: str) -> str:
    env = bridge_env(cluster.bootstrap, ("in", "out", "dlq"), server, **cluster.env(**overrides))
    done = run_bridge(env, "run")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    return done.stderr


def test_mtls_without_a_client_certificate_stops_the_bridge(
    mtls_cluster: Cluster, model_server: ModelServer
) -> None:
    # The same cluster, the client without its certificate.
    stderr = refused_at_start(
        Cluster(mtls_cluster.bootstrap, mtls_cluster.certs, False), model_server
    )
    assert "BRIDGE_KAFKA__SSL_CERTFILE" in stderr, stderr


def test_a_wrong_ca_stops_the_bridge(
    tls_cluster: Cluster, model_server: ModelServer, certs: Certs
) -> None:
    stderr = refused_at_start(
        tls_cluster, model_server, BRIDGE_KAFKA__SSL_CAFILE=str(certs.other_ca)
    )
    assert "not trusted" in stderr and "BRIDGE_KAFKA__SSL_CAFILE" in stderr, stderr


def test_an_expired_client_certificate_stops_the_bridge(
    mtls_cluster: Cluster, model_server: ModelServer, certs: Certs
) -> None:
    stderr = refused_at_start(
        mtls_cluster,
        model_server,
        BRIDGE_KAFKA__SSL_CERTFILE=str(certs.expired_cert),
        BRIDGE_KAFKA__SSL_KEYFILE=str(certs.expired_key),
    )
    assert "BRIDGE_KAFKA__SSL_CERTFILE" in stderr, stderr


def test_a_ca_file_that_does_not_exist_stops_the_bridge(
    tls_cluster: Cluster, model_server: ModelServer, tmp_path: Path
) -> None:
    stderr = refused_at_start(
        tls_cluster, model_server, BRIDGE_KAFKA__SSL_CAFILE=str(tmp_path / "missing.pem")
    )
    assert "BRIDGE_KAFKA__SSL_CAFILE" in stderr, stderr
