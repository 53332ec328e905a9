"""Kafka over SASL (SCRAM-SHA-256/512, PLAIN): logins that work, and logins that are refused.

Two clusters:

- The dev broker with ``--authentication`` (``DevBroker(authentication=True)``), always.
  Tansu 0.6.0 refuses every login there (it keeps no SCRAM user and does not offer
  PLAIN; see ``tools.harness.broker``), which is what the refusal tests need: the bridge
  must stop at start with exit code 2 and a message naming the SASL settings - not a
  traceback, not a retry loop - over SASL_PLAINTEXT and over SASL_SSL (stunnel).
- A real cluster that accepts a login, named by ``BRIDGE_TEST_KAFKA_BOOTSTRAP``,
  ``BRIDGE_TEST_KAFKA_SECURITY_PROTOCOL`` (SASL_PLAINTEXT or SASL_SSL),
  ``BRIDGE_TEST_KAFKA_SASL_MECHANISM`` (one, or several separated by commas, e.g.
  ``SCRAM-SHA-256,SCRAM-SHA-512`` for a user with both credentials),
  ``BRIDGE_TEST_KAFKA_SASL_USERNAME``, ``BRIDGE_TEST_KAFKA_SASL_PASSWORD`` and, for
  SASL_SSL with a private CA, ``BRIDGE_TEST_KAFKA_SSL_CAFILE``. Without them those
  tests skip, naming the variables. The user needs to create topics and to read and
  write them and its group.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from tests.integration.procs import Bridges
from tools.harness.broker import DevBroker, free_port
from tools.harness.processes import ModelServer, bridge_env, run_bridge
from tools.harness.secured import make_topics, read_outputs, send_events
from tools.harness.tls import Certs, Stunnel, make_certs, stunnel_binary

pytestmark = pytest.mark.integration

EVENTS = 30
SASL_SETTINGS = (
    "BRIDGE_KAFKA__SASL_USERNAME",
    "BRIDGE_KAFKA__SASL_PASSWORD",
    "BRIDGE_KAFKA__SASL_MECHANISM",
)
# A refused login is a wrong setting: the bridge must say so at once. A bridge that
# retried would run into run_bridge's 120 s limit; this is far below it and far above
# a start (the model server check, one bootstrap, one probe).
REFUSAL_WITHIN_S = 45.0

ENV = {
    "bootstrap": "BRIDGE_TEST_KAFKA_BOOTSTRAP",
    "protocol": "BRIDGE_TEST_KAFKA_SECURITY_PROTOCOL",
    "mechanism": "BRIDGE_TEST_KAFKA_SASL_MECHANISM",
    "username": "BRIDGE_TEST_KAFKA_SASL_USERNAME",
    "password": "BRIDGE_TEST_KAFKA_SASL_PASSWORD",
}
CAFILE_ENV = "BRIDGE_TEST_KAFKA_SSL_CAFILE"


@dataclass(frozen=True)
class Cluster:
    bootstrap: str
    protocol: str
    mechanism: str
    username: str
    password: str
    cafile: str | None = None

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "BRIDGE_KAFKA__SECURITY_PROTOCOL": self.protocol,
            "BRIDGE_KAFKA__SASL_MECHANISM": self.mechanism,
            "BRIDGE_KAFKA__SASL_USERNAME": self.username,
            "BRIDGE_KAFKA__SASL_PASSWORD": self.password,
        }
        if self.cafile is not None:
            env["BRIDGE_KAFKA__SSL_CAFILE"] = self.cafile
        return {**env, **overrides}

    def options(self) -> dict[str, object]:
        """The test's own clients: the same login as the bridge's."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }
        if self.protocol == "SASL_SSL":
            options["ssl_context"] = ssl.create_default_context(cafile=self.cafile)
        return options


# -- the external cluster (a login that works) ---------------------------------------------


def _external_mechanisms() -> list[str]:
    return [m.strip() for m in os.environ.get(ENV["mechanism"], "").split(",") if m.strip()]


@pytest.fixture(params=_external_mechanisms() or ["(none)"])
def external(request: pytest.FixtureRequest) -> Cluster:
    values = {key: os.environ.get(name, "") for key, name in ENV.items()}
    missing = [ENV[key] for key, value in values.items() if not value]
    if missing or not values["protocol"].startswith("SASL_"):
        pytest.skip(
            "a Kafka cluster that accepts a SASL login is needed (the dev broker accepts "
            f"none): set {', '.join(ENV.values())} (protocol SASL_PLAINTEXT or SASL_SSL) "
            f"and, for a private CA, {CAFILE_ENV}; missing: {', '.join(missing) or 'none'}"
        )
    return Cluster(
        values["bootstrap"],
        values["protocol"],
        str(request.param),
        values["username"],
        values["password"],
        os.environ.get(CAFILE_ENV) or None,
    )


async def test_the_bridge_delivers_every_event_over_sasl(
    external: Cluster, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    source, results, failures = await make_topics(external.options(), topic_prefix)
    sent = await send_events(external.options(), source, EVENTS, seed=5)
    env = bridge_env(
        external.bootstrap,
        (source, results, failures),
        model_server,
        group=f"{topic_prefix}-g",
        **external.env(),
    )
    bridge = await bridges.start_assigned(env)
    outputs = await read_outputs(external.options(), (results, failures), len(sent))
    assert [o for o in outputs if o[0] == failures] == []
    got = [(o[1]["source"]["partition"], o[1]["source"]["offset"]) for o in outputs]  # type: ignore[index]
    assert sorted(got) == sorted(sent)  # every event, one record each
    assert bridge.stop() == 0


def test_routes_set_and_show_over_sasl(external: Cluster, topic_prefix: str) -> None:
    env = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": external.bootstrap,
        "BRIDGE_TOPICS__CONTROL": f"{topic_prefix}-control",
        **external.env(),
    }
    done = run_bridge(env, "routes", "set", "fraud", "stable=70", "canary=30", "--no-check")
    assert done.returncode == 0, done.stderr
    shown = run_bridge(env, "routes", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["models"]["fraud"]["routes"] == {"stable": 70, "canary": 30}


def test_a_wrong_password_stops_the_bridge_on_the_external_cluster(
    external: Cluster, model_server: ModelServer
) -> None:
    stderr = refused_at_start(
        replace(external, password=external.password + "-wrong"), model_server
    )
    assert "refused the SASL login" in stderr, stderr


# -- the dev broker (every login refused) --------------------------------------------------


@pytest.fixture(scope="module")
def authenticating_broker() -> Iterator[DevBroker]:
    with DevBroker(authentication=True) as broker:
        yield broker


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if stunnel_binary() is None:
        pytest.skip("needs stunnel4 on PATH (apt-get install stunnel4; `make test` installs it)")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def authenticating_tls_broker(certs: Certs) -> Iterator[str]:
    """The bootstrap servers of an authenticating broker behind stunnel (SASL_SSL)."""
    tls_port = free_port()
    with (
        DevBroker(advertised_port=tls_port, authentication=True) as broker,
        Stunnel(certs, tls_port, broker.port, mtls=False),
    ):
        yield f"127.0.0.1:{tls_port}"


def refused_at_start(cluster: Cluster, server: ModelServer) -> str:
    env = bridge_env(cluster.bootstrap, ("in", "out", "dlq"), server, **cluster.env())
    started = time.monotonic()
    done = run_bridge(env, "run")
    took = time.monotonic() - started
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert took < REFUSAL_WITHIN_S, f"took {took:.0f} s: a retry loop?"
    for setting in SASL_SETTINGS:
        assert setting in done.stderr, done.stderr
    assert cluster.password not in done.stderr + done.stdout  # a secret, never printed
    return done.stderr


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_a_refused_scram_login_stops_the_bridge(
    authenticating_broker: DevBroker, model_server: ModelServer, mechanism: str
) -> None:
    cluster = Cluster(
        authenticating_broker.bootstrap_servers, "SASL_PLAINTEXT", mechanism, "alice", "pw-1"
    )
    stderr = refused_at_start(cluster, model_server)
    assert "refused the SASL login of BRIDGE_KAFKA__SASL_USERNAME=alice" in stderr, stderr


def test_a_mechanism_the_broker_does_not_offer_stops_the_bridge(
    authenticating_broker: DevBroker, model_server: ModelServer
) -> None:
    # Tansu offers no PLAIN, and hangs up on a handshake that asks for it.
    cluster = Cluster(
        authenticating_broker.bootstrap_servers, "SASL_PLAINTEXT", "PLAIN", "alice", "pw-2"
    )
    stderr = refused_at_start(cluster, model_server)
    assert "may not offer that mechanism" in stderr, stderr


def test_a_refused_login_over_sasl_ssl_stops_the_bridge(
    authenticating_tls_broker: str, certs: Certs, model_server: ModelServer
) -> None:
    # TLS works (the check of the session passes), the login behind it does not.
    cluster = Cluster(
        authenticating_tls_broker, "SASL_SSL", "SCRAM-SHA-512", "alice", "pw-3", str(certs.ca)
    )
    stderr = refused_at_start(cluster, model_server)
    assert "refused the SASL login" in stderr and "TLS" not in stderr, stderr


def test_the_operator_commands_report_a_refused_login(
    authenticating_broker: DevBroker, topic_prefix: str
) -> None:
    cluster = Cluster(
        authenticating_broker.bootstrap_servers, "SASL_PLAINTEXT", "SCRAM-SHA-512", "bob", "pw-4"
    )
    env = {
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap,
        "BRIDGE_TOPICS__CONTROL": f"{topic_prefix}-control",
        **cluster.env(),
    }
    for argv in (("routes", "set", "fraud", "stable=100", "--no-check"), ("routes", "show")):
        done = run_bridge(env, *argv)
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "BRIDGE_KAFKA__SASL_PASSWORD" in done.stderr, (argv, done.stderr)
