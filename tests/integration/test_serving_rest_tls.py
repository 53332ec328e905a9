"""The bridge to TF Serving's REST API over https, through a real TLS terminator.

Upstream TF Serving's REST port has no TLS (its ``--ssl_config_file`` covers gRPC
only), so a deployment puts a terminator in front of it; here it is stunnel4
(``tools.harness.tls``) on loopback, forwarding to the local model server's plain
REST port: one with TLS, one with ``verify = 2`` (mTLS). Both stunnels only speak
TLS, so an event delivered through them went over https.

What an operator sees when the TLS session is refused (no client certificate for
the mTLS terminator, a CA file that did not sign its certificate) matches the gRPC
tests (``test_serving_tls.py``): the bridge keeps running, held by the outage logic
(nothing consumed into results, nothing into failures), and its
``model_server_unreachable`` line gives OpenSSL's reason and a hint naming the
setting. A plain ``http://`` URL with the CA file set stops the start with exit 2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bridge.domain import Target
from bridge.serving.rest_client import RestModelClient
from bridge.serving.tls import ServingTls
from tests.integration.kafka_io import Outputs, Producer, make_topics, payment_items
from tests.integration.procs import Bridges, log_events
from tools.harness.broker import free_port
from tools.harness.processes import BridgeProcess, ModelServer, bridge_env, run_bridge
from tools.harness.tls import Certs, Stunnel, make_certs, stunnel_binary

pytestmark = pytest.mark.integration

EVENTS = 60
CA, CERT, KEY, NAME = (
    f"BRIDGE_SERVING__SSL_{s}" for s in ("CAFILE", "CERTFILE", "KEYFILE", "TARGET_NAME")
)
URL = "BRIDGE_SERVING__REST_URL"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if stunnel_binary() is None:
        pytest.skip("needs stunnel4 on PATH (apt-get install stunnel4; `make test` installs it)")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def terminators(certs: Certs, model_server: ModelServer) -> Iterator[dict[str, str]]:
    """https URLs of two stunnels in front of the model server's REST port: "tls", "mtls"."""
    with (
        Stunnel(certs, free_port(), model_server.rest_port, mtls=False) as tls,
        Stunnel(certs, free_port(), model_server.rest_port, mtls=True) as mtls,
    ):
        yield {
            "tls": f"https://127.0.0.1:{tls.accept_port}",
            "mtls": f"https://127.0.0.1:{mtls.accept_port}",
        }


def _rest_env(
    kafka_bootstrap: str,
    topics: tuple[str, str, str],
    group: str,
    server: ModelServer,
    url: str,
    **tls: str,
) -> dict[str, str]:
    return bridge_env(
        kafka_bootstrap, topics, server, protocol="rest", group=group, **{URL: url}, **tls
    )


@pytest.mark.parametrize("mode", ["tls", "mtls"])
async def test_delivers_every_event_over_https(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    terminators: dict[str, str],
    certs: Certs,
    bridges: Bridges,
    mode: str,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    tls = {CA: str(certs.ca)}
    if mode == "mtls":
        tls |= {CERT: str(certs.client_cert), KEY: str(certs.client_key)}
    else:
        # The URL's host is 127.0.0.1; the certificate also carries this name.
        tls[NAME] = "model-server.test"
    env = _rest_env(
        kafka_bootstrap, topics.names, topics.group, model_server, terminators[mode], **tls
    )
    bridge = await bridges.start_assigned(env)
    async with Producer(kafka_bootstrap) as producer, Outputs.of(kafka_bootstrap, topics) as out:
        sent = await producer.send_all(topics.input, payment_items(EVENTS, seed=11))
        await out.wait_until(
            lambda o: len(o.results) + len(o.failures) >= len(sent),
            f"{len(sent)} outputs",
            60,
            bridge.output,
        )
    assert not out.failures, [f.header("__connect.errors.exception.message") for f in out.failures]
    assert len(out.results) == EVENTS
    assert not log_events(bridge, "model_server_unreachable")


@pytest.mark.parametrize(
    ("mode", "ca_of", "client_cert", "reasons", "setting"),
    [
        # TLS 1.3 refuses a missing client certificate after the client's handshake: the
        # alert arrives with the first read, unless the terminator's reset (the client
        # had written its request to a closed socket) discards it first: a bare hang-up.
        ("mtls", "ca", False, ("CERTIFICATE_REQUIRED", "ReadError"), CERT),
        ("tls", "other_ca", False, ("CERTIFICATE_VERIFY_FAILED",), CA),
        ("mtls", "other_ca", True, ("CERTIFICATE_VERIFY_FAILED",), CA),
    ],
    ids=["no-client-certificate", "wrong-ca", "wrong-ca-with-client-certificate"],
)
async def test_a_refused_tls_session_holds_and_says_why(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    terminators: dict[str, str],
    certs: Certs,
    bridges: Bridges,
    mode: str,
    ca_of: str,
    client_cert: bool,
    reasons: tuple[str, ...],
    setting: str,
) -> None:
    topics = await make_topics(kafka_bootstrap, topic_prefix)
    tls = {CA: str(getattr(certs, ca_of))}
    if client_cert:
        tls |= {CERT: str(certs.client_cert), KEY: str(certs.client_key)}
    env = _rest_env(
        kafka_bootstrap, topics.names, topics.group, model_server, terminators[mode], **tls
    )
    bridge = bridges.start(env)
    async with Producer(kafka_bootstrap) as producer, Outputs.of(kafka_bootstrap, topics) as out:
        await producer.send_all(topics.input, payment_items(10, seed=13))
        await _wait_log(bridge, "model_server_unreachable")
        await _wait_log(bridge, "model_server_down")
        await out.poll()
        assert not out.results and not out.failures, "nothing is delivered, nothing fails"
    assert bridge.process is not None and bridge.process.poll() is None, bridge.output()
    unreachable = log_events(bridge, "model_server_unreachable")  # once per distinct reason
    assert unreachable, bridge.output()
    for entry in unreachable:
        assert any(reason in entry["detail"] for reason in reasons), entry
        assert setting in entry["hint"], entry


async def test_the_target_name_is_the_name_checked(
    terminators: dict[str, str], certs: Certs
) -> None:
    """SSL_TARGET_NAME reaches the handshake: a name the certificate lacks is refused."""

    async def ready(name: str) -> bool:
        rest = RestModelClient(
            terminators["tls"], 5.0, 5.0, tls=ServingTls(certs.ca, target_name=name)
        )
        try:
            return await rest.is_ready(Target("fraud"))
        finally:
            await rest.aclose()

    assert await ready("model-server.test")
    assert not await ready("not-in-the-certificate.test")


def test_routes_set_checks_the_targets_over_mtls(
    kafka_bootstrap: str, topic_prefix: str, terminators: dict[str, str], certs: Certs
) -> None:
    env = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "BRIDGE_TOPICS__CONTROL": f"{topic_prefix}-control",
        "BRIDGE_SERVING__PROTOCOL": "rest",
        URL: terminators["mtls"],
        CA: str(certs.ca),
        CERT: str(certs.client_cert),
        KEY: str(certs.client_key),
    }
    done = run_bridge(env, "routes", "set", "fraud", "stable=70", "canary=30")
    assert done.returncode == 0, done.stdout + done.stderr
    # Without the client certificate the check cannot reach the server: nothing is written.
    refused = run_bridge(
        {k: v for k, v in env.items() if k not in (CERT, KEY)},
        "routes",
        "set",
        "fraud",
        "stable=50",
        "canary=50",
    )
    assert refused.returncode != 0, refused.stdout
    assert "Traceback" not in refused.stderr
    shown = run_bridge(env, "routes", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert '"stable": 70' in shown.stdout


def test_a_plain_http_url_with_the_ca_stops_the_start(
    model_server: ModelServer, certs: Certs
) -> None:
    env = bridge_env(
        "127.0.0.1:9", ("in", "out", "dlq"), model_server, protocol="rest", **{CA: str(certs.ca)}
    )
    done = run_bridge(env, "run")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{CA} is set but {URL} ({model_server.rest_url}) is not https://" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


async def _wait_log(bridge: BridgeProcess, event: str) -> None:
    await asyncio.to_thread(bridge.wait_for_log, event, 60)
