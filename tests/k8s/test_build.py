"""k8s/ as kustomize builds it: the base and each component, schema-valid.

Each build runs ``kubectl kustomize`` with the default load restrictor (what
``kubectl apply -k``, Argo CD and Flux run). Built-in resources are validated with
``kubernetes-validate --strict`` for every Kubernetes version k8s/README.md says is
supported; the custom resources (KEDA, Prometheus Operator) against the models
cloudcoil generates from their published CRD schemas, and structurally. Then the
values that must agree across resources are checked on the built output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import describe_settings

yaml = pytest.importorskip("yaml", reason="reading the manifests needs pyyaml (dev extra)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="schema validation needs kubernetes-validate (dev extra)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the manifests cannot be built"
)

# Every component on its own (keda-auth needs keda), and all that fit together: the
# hpa and keda components both autoscale the Deployment, so never both.
BUILDS: dict[str, tuple[str, ...]] = {
    "base": (),
    "hpa": ("hpa",),
    "keda": ("keda",),
    "keda-auth": ("keda", "keda-auth"),
    "monitoring": ("monitoring",),
    "kafka-sasl": ("kafka-sasl",),
    "all": ("keda", "keda-auth", "monitoring", "kafka-sasl"),
}
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}

BUILT_IN_GROUPS = {"v1", "apps", "policy", "autoscaling", "networking.k8s.io"}

Manifest = dict[str, Any]


def supported_versions() -> list[str]:
    """The versions k8s/README.md states ("Supported Kubernetes versions: 1.29 to 1.32")."""
    text = (K8S / "README.md").read_text()
    match = re.search(r"Supported Kubernetes versions: 1\.(\d+) to 1\.(\d+)", text)
    assert match, "k8s/README.md states the supported Kubernetes versions"
    return [f"1.{minor}.0" for minor in range(int(match[1]), int(match[2]) + 1)]


def build(tmp_path: Path, components: tuple[str, ...]) -> list[Manifest]:
    """The resources `kubectl kustomize` makes of k8s/ with these components."""
    target = K8S
    if components:
        # An overlay as a user writes one; kustomize wants paths relative to it.
        overlay = tmp_path / "overlay"
        overlay.mkdir()
        relative = os.path.relpath(K8S, overlay)
        overlay.joinpath("kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [relative],
                    "components": [f"{relative}/components/{name}" for name in components],
                }
            )
        )
        target = overlay
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(target)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]


@pytest.fixture(scope="module", params=list(BUILDS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name: str = request.param
    return name, build(tmp_path_factory.mktemp(name), BUILDS[name])


def _one(docs: list[Manifest], kind: str) -> Manifest:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _kinds(docs: list[Manifest]) -> set[str]:
    return {doc["kind"] for doc in docs}


def _env(docs: list[Manifest]) -> dict[str, str]:
    defaults = {name: default for name, default, _ in describe_settings()}
    config = next(d for d in docs if d["metadata"]["name"] == "tfs-kafka-bridge-config")
    return {**defaults, **config["data"]}


def _partitions(docs: list[Manifest]) -> int:
    deployment = _one(docs, "Deployment")
    return int(deployment["metadata"]["annotations"]["tfs-kafka-bridge/input-partitions"])


def _pod(docs: list[Manifest]) -> Manifest:
    pod: Manifest = _one(docs, "Deployment")["spec"]["template"]["spec"]
    return pod


def _ports(docs: list[Manifest]) -> dict[str, int]:
    """Named ports of the pod's containers and native sidecars."""
    pod = _pod(docs)
    containers = [*pod["containers"], *pod.get("initContainers", [])]
    return {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}


# -- schemas -----------------------------------------------------------------------------


def test_built_in_resources_are_schema_valid(built: tuple[str, list[Manifest]]) -> None:
    _, docs = built
    versions = supported_versions()
    assert versions[0] == "1.29.0", "native sidecars need Kubernetes >= 1.29"
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            continue
        for version in versions:
            # Raises ValidationError; --strict also refuses fields the schema lacks.
            kubernetes_validate.validate(doc, version, strict=True)


def test_custom_resources_are_structurally_sound(built: tuple[str, list[Manifest]]) -> None:
    _, docs = built
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        # Anything else is a built-in kind, which the schema test covers.
        assert key in CUSTOM or doc["apiVersion"].split("/")[0] in BUILT_IN_GROUPS, key
        if key in CUSTOM:
            assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, key
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_custom_resources_match_their_published_schemas(
    built: tuple[str, list[Manifest]],
) -> None:
    keda = pytest.importorskip(
        "cloudcoil.models.keda.v1alpha1", reason="KEDA's schema: cloudcoil-models-keda (dev extra)"
    )
    operator = pytest.importorskip(
        "cloudcoil.models.prometheus_operator.v1",
        reason="the PodMonitor schema: cloudcoil-models-prometheus-operator (dev extra)",
    )
    models = {
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
        ("monitoring.coreos.com/v1", "PodMonitor"): operator.PodMonitor,
    }
    _, docs = built
    for doc in docs:
        model = models.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            continue
        # The models drop fields they do not know: a round trip that loses something
        # is a misspelt or misplaced field (the strict check, for the CRDs).
        parsed = model.model_validate(doc)
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc


# -- the base ----------------------------------------------------------------------------


def test_base_builds_with_the_default_load_restrictor(tmp_path: Path) -> None:
    docs = build(tmp_path, ())
    assert _kinds(docs) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}
    pod = _pod(docs)
    assert [c["name"] for c in pod["initContainers"]] == ["tensorflow-serving"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(pod["containers"][0])


def test_network_policy_keeps_tf_serving_to_the_pod(tmp_path: Path) -> None:
    docs = build(tmp_path, ())
    policy = _one(docs, "NetworkPolicy")
    ports = _ports(docs)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    rules = policy["spec"]["ingress"]
    opened = [ports.get(p["port"], p["port"]) for rule in rules for p in rule["ports"]]
    assert opened == [ports["metrics"]]  # not 8500 (incl. the reload API) nor 8501
    for rule in policy["spec"]["ingress"]:
        [peer] = rule["from"]
        assert set(peer) == {"namespaceSelector"}  # the monitoring namespace, nothing else
    egress = {(p["protocol"], p["port"]) for r in policy["spec"]["egress"] for p in r["ports"]}
    assert {("UDP", 53), ("TCP", 53)} <= egress
    servers = _env(docs)["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"].split(",")
    assert {("TCP", int(s.rpartition(":")[2])) for s in servers} <= egress


# -- components --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hpa", "keda"])
def test_autoscalers_own_the_replica_count(tmp_path: Path, name: str) -> None:
    docs = build(tmp_path, BUILDS[name])
    assert "replicas" not in _one(docs, "Deployment")["spec"]
    assert "replicas" in _one(build(tmp_path / "base", ()), "Deployment")["spec"]


def test_hpa_is_capped_at_the_partitions(tmp_path: Path) -> None:
    docs = build(tmp_path, BUILDS["hpa"])
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] <= _partitions(docs)


def test_keda_scales_the_bridge_group_on_its_input(tmp_path: Path) -> None:
    docs = build(tmp_path, BUILDS["keda"])
    scaled = _one(docs, "ScaledObject")
    env = _env(docs)
    assert scaled["spec"]["scaleTargetRef"]["name"] == _one(docs, "Deployment")["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == env["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"]
    assert meta["consumerGroup"] == env["BRIDGE_KAFKA__GROUP_ID"]
    assert meta["topic"] == env["BRIDGE_TOPICS__INPUT"]
    assert meta["offsetResetPolicy"] == env["BRIDGE_KAFKA__AUTO_OFFSET_RESET"]
    assert int(meta["lagThreshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values())  # KEDA wants strings
    # Members past the partition count get no partition: they would only idle.
    assert meta["allowIdleConsumers"] == "false"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert scaled["spec"]["maxReplicaCount"] <= _partitions(docs)


def test_keda_auth_reads_the_bridge_kafka_secret(tmp_path: Path) -> None:
    docs = build(tmp_path, BUILDS["keda-auth"])
    auth = _one(docs, "TriggerAuthentication")
    [trigger] = _one(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = auth["spec"]["secretTargetRef"]
    secrets = {v["secret"]["secretName"] for v in _pod(docs)["volumes"] if "secret" in v}
    assert {r["name"] for r in refs} <= secrets
    assert {r["parameter"] for r in refs} == {"sasl", "tls", "username", "password", "ca"}


def test_kafka_sasl_reads_its_secrets_from_the_mounted_files(tmp_path: Path) -> None:
    docs = build(tmp_path, BUILDS["kafka-sasl"])
    env = _env(docs)
    known = {name for name, _, _ in describe_settings()}
    assert set(env) <= known
    assert env["BRIDGE_KAFKA__SECURITY_PROTOCOL"].startswith("SASL_")
    config = next(d for d in docs if d["metadata"]["name"] == "tfs-kafka-bridge-config")
    assert "BRIDGE_KAFKA__SASL_PASSWORD" not in config["data"]  # the file, never the value
    pod = _pod(docs)
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["optional"] is False  # no start without the credentials
    [bridge] = pod["containers"]
    [mount] = [m for m in bridge["volumeMounts"] if m["name"] == volume["name"]]
    for name in ("BRIDGE_KAFKA__SASL_PASSWORD_FILE", "BRIDGE_KAFKA__SSL_CAFILE"):
        assert Path(env[name]).parent == Path(mount["mountPath"]), name


def test_pod_monitor_scrapes_both_containers(tmp_path: Path) -> None:
    docs = build(tmp_path, BUILDS["monitoring"])
    monitor = _one(docs, "PodMonitor")
    ports = _ports(docs)
    env = _env(docs)
    labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert ports["metrics"] == int(env["BRIDGE_METRICS__PORT"])
    monitoring = (K8S / "serving-config" / "monitoring.config").read_text()
    serving_path = re.search(r'path:\s*"([^"]+)"', monitoring)
    assert serving_path
    assert endpoints == {"metrics": "/metrics", "rest": serving_path[1]}
    # The sidecar's endpoint needs its port opened to monitoring, and only that one.
    opened = {
        p["port"]
        for policy in docs
        if policy["kind"] == "NetworkPolicy"
        for rule in policy["spec"].get("ingress", [])
        for p in rule["ports"]
    }
    assert opened == {"metrics", "rest"}
    assert all(ports[name] != 8500 for name in opened)
