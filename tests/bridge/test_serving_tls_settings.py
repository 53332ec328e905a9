"""``BRIDGE_SERVING__SSL_*``: checked at load, for ``bridge run`` and ``bridge serving ...``.

The certificates are real (``openssl``, in the test's tmp dir) so the https context
is built from the same files a deployment would mount.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.serving.tls import ServingTls, ServingTlsError
from bridge.settings import SettingsError, load_ops_settings, load_settings
from tools.harness.tls import Certs, make_certs

REQUIRED = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "BRIDGE_TOPICS__INPUT": "payments",
    "BRIDGE_TOPICS__RESULTS": "scores",
    "BRIDGE_TOPICS__FAILURES": "payments-dlq",
    "BRIDGE_MODEL__NAME": "fraud",
}
CA, CERT, KEY, NAME = (
    f"BRIDGE_SERVING__SSL_{s}" for s in ("CAFILE", "CERTFILE", "KEYFILE", "TARGET_NAME")
)
PROTOCOL, URL = "BRIDGE_SERVING__PROTOCOL", "BRIDGE_SERVING__REST_URL"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)


def _problem(monkeypatch: pytest.MonkeyPatch, **env: str | Path) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    with pytest.raises(SettingsError) as ops_caught:
        load_ops_settings()
    assert str(ops_caught.value) == str(caught.value)  # the commands check the same way
    return str(caught.value)


def test_unset_is_plaintext() -> None:
    assert load_settings().serving.tls() is None
    assert load_ops_settings().serving.tls() is None


def test_the_ca_turns_tls_on(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    monkeypatch.setenv(CA, str(certs.ca))
    assert load_settings().serving.tls() == ServingTls(certs.ca)
    monkeypatch.setenv(CERT, str(certs.client_cert))
    monkeypatch.setenv(KEY, str(certs.client_key))
    monkeypatch.setenv(NAME, "model-server.test")
    expected = ServingTls(certs.ca, certs.client_cert, certs.client_key, "model-server.test")
    assert load_settings().serving.tls() == expected
    assert load_ops_settings().serving.tls() == expected
    ca, chain, key = expected.pem()
    assert (ca, chain, key) == (
        certs.ca.read_bytes(),
        certs.client_cert.read_bytes(),
        certs.client_key.read_bytes(),
    )


def test_a_missing_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    problem = _problem(monkeypatch, **{CA: tmp_path / "nope.pem"})
    assert f"{CA}: Value error, cannot read {tmp_path / 'nope.pem'}: No such file" in problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, certs: Certs
) -> None:
    key = tmp_path / "client.key"
    key.write_bytes(certs.client_key.read_bytes())
    key.chmod(0)
    problem = _problem(monkeypatch, **{CA: certs.ca, CERT: certs.client_cert, KEY: key})
    assert f"{KEY}: Value error, cannot read {key}: Permission denied" in problem


def test_a_file_without_pem_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a")
    assert f"{CA}: Value error, {der} holds no PEM block" in _problem(monkeypatch, **{CA: der})


def test_certificate_and_key_go_together(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    problem = _problem(monkeypatch, **{CA: certs.ca, CERT: certs.client_cert})
    assert f"{CERT} and {KEY} go together" in problem


def test_client_files_without_the_ca_are_refused(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    problem = _problem(
        monkeypatch, **{CERT: certs.client_cert, KEY: certs.client_key, NAME: "x.test"}
    )
    assert f"{CERT}, {KEY}, {NAME} set without {CA}" in problem


def test_rest_over_https_takes_the_tls_files(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    monkeypatch.setenv(PROTOCOL, "rest")
    monkeypatch.setenv(URL, "https://tfs.internal:8443")
    monkeypatch.setenv(CA, str(certs.ca))
    monkeypatch.setenv(CERT, str(certs.client_cert))
    monkeypatch.setenv(KEY, str(certs.client_key))
    expected = ServingTls(certs.ca, certs.client_cert, certs.client_key)
    assert load_settings().serving.tls() == expected
    assert load_ops_settings().serving.tls() == expected


def test_an_https_url_without_the_ca_is_tls_with_httpx_default_trust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROTOCOL, "rest")
    monkeypatch.setenv(URL, "https://tfs.example.com")
    assert load_settings().serving.tls() is None  # RestModelClient: httpx's verify=True


def test_the_ca_with_a_plain_http_rest_url_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    problem = _problem(
        monkeypatch, **{PROTOCOL: "rest", URL: "http://127.0.0.1:8501", CA: certs.ca}
    )
    assert f"{CA} is set but {URL} (http://127.0.0.1:8501) is not https://" in problem


def test_the_default_rest_url_is_no_problem_for_grpc(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    monkeypatch.setenv(CA, str(certs.ca))  # REST_URL stays http://127.0.0.1:8501, unused
    assert load_settings().serving.tls() == ServingTls(certs.ca)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_a_key_that_is_not_the_certificates_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, certs: Certs, protocol: str
) -> None:
    problem = _problem(
        monkeypatch,
        **{
            PROTOCOL: protocol,
            URL: "https://127.0.0.1:8443",
            CA: certs.ca,
            CERT: certs.client_cert,
            KEY: certs.server_key,
        },
    )
    assert f"{CERT}, {KEY}: OpenSSL refuses {certs.client_cert} with {certs.server_key}" in problem
    assert "KEY_VALUES_MISMATCH" in problem


def test_an_encrypted_key_is_refused_not_prompted_for(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    # Without a password callback OpenSSL would ask on the terminal: a hung start.
    problem = _problem(
        monkeypatch, **{CA: certs.ca, CERT: certs.client_cert, KEY: certs.client_key_encrypted}
    )
    assert f"{CERT}, {KEY}: OpenSSL refuses" in problem
    assert "unencrypted PEM" in problem


def test_a_ca_file_without_certificates_is_refused(
    monkeypatch: pytest.MonkeyPatch, certs: Certs
) -> None:
    problem = _problem(monkeypatch, **{CA: certs.client_key})  # PEM, but a key
    assert f"{CA}: OpenSSL cannot load {certs.client_key} as CA certificates" in problem


def test_bridge_run_exits_2_on_a_wrong_key_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, certs: Certs, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {
        PROTOCOL: "rest",
        URL: "https://127.0.0.1:8443",
        CA: certs.ca,
        CERT: certs.client_cert,
        KEY: certs.server_key,
    }.items():
        monkeypatch.setenv(name, str(value))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert f"{CERT}, {KEY}: OpenSSL refuses" in err
    assert "Traceback" not in err


def test_bridge_run_exits_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CA, str(tmp_path / "nope.pem"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert CA in err
    assert "Traceback" not in err


def test_https_context_trusts_the_ca_and_carries_the_client_certificate(
    certs: Certs,
) -> None:
    context = ServingTls(certs.ca, certs.client_cert, certs.client_key).ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    with pytest.raises(ServingTlsError, match="KEY_VALUES_MISMATCH"):
        ServingTls(certs.ca, certs.client_cert, certs.server_key).ssl_context()  # wrong key
