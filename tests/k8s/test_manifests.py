"""The production manifests in k8s/ (and the bridge's Dockerfile), checked against the code.

Nothing here is applied: there is no cluster or Docker daemon in the test
environment (tests/k8s/test_build.py builds them with kubectl and validates the result
against the Kubernetes schemas). Here each value that must agree with something else
is checked against it: the ConfigMap's BRIDGE_* variables against ``bridge.settings``, the
sidecar's flags against ``serving.options.parse_args`` (upstream's flag names), the
mounted config files against ``k8s/serving-config``, ports against ports, grace periods
against the bridge's shutdown grace. No sockets, no subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from bridge.settings import Settings, describe_settings, load_settings
from serving import model_config
from serving.options import ServerOptions, parse_args

yaml = pytest.importorskip("yaml", reason="reading the manifests needs pyyaml (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SERVING_COPIES = K8S / "serving-config"  # the serving config, below k8s/ for kustomize
SERVER_BINARY = "/usr/bin/tensorflow_model_server"
BRIDGE_RSS_MIB = 80  # the bridge's measured peak RSS stays below this

Manifest = dict[str, Any]


# -- loading ------------------------------------------------------------------------------


def _documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _one(kind: str, docs: list[Manifest]) -> Manifest:
    found = [doc for doc in docs if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def kustomization() -> Manifest:
    return _documents(K8S / "kustomization.yaml")[0]


@pytest.fixture(scope="module")
def resources(kustomization: Manifest) -> list[Manifest]:
    docs: list[Manifest] = []
    for name in kustomization["resources"]:
        docs.extend(_documents(K8S / name))
    return docs


@pytest.fixture(scope="module")
def deployment(resources: list[Manifest]) -> Manifest:
    return _one("Deployment", resources)


@pytest.fixture(scope="module")
def pod(deployment: Manifest) -> Manifest:
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def _containers(pod: Manifest) -> list[Manifest]:
    """The pod's long-running containers: the regular ones and the native sidecars."""
    sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return [*pod["containers"], *sidecars]


def _container(pod: Manifest, name: str) -> Manifest:
    found: list[Manifest] = [c for c in _containers(pod) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}"
    return found[0]


@pytest.fixture(scope="module")
def bridge(pod: Manifest) -> Manifest:
    return _container(pod, "bridge")


@pytest.fixture(scope="module")
def sidecar(pod: Manifest) -> Manifest:
    return _container(pod, "tensorflow-serving")


@pytest.fixture(scope="module")
def options(sidecar: Manifest) -> ServerOptions:
    """The sidecar's command line, parsed as tensorflow_model_server parses it."""
    return parse_args(sidecar["args"])


@pytest.fixture(scope="module")
def bridge_env(resources: list[Manifest], bridge: Manifest) -> dict[str, str]:
    """The environment the bridge container gets from its ConfigMap."""
    names = [ref["configMapRef"]["name"] for ref in bridge.get("envFrom", [])]
    assert names, "the bridge takes its settings from a ConfigMap (envFrom)"
    maps = {doc["metadata"]["name"]: doc for doc in resources if doc["kind"] == "ConfigMap"}
    assert set(names) <= set(maps), f"ConfigMaps {names} are not all in the resources"
    env: dict[str, str] = {}
    for name in names:
        env.update(maps[name].get("data", {}))
    return env


@pytest.fixture(scope="module")
def settings(bridge_env: dict[str, str]) -> Settings:
    """The settings the bridge builds at start in the pod (with no SASL Secret present)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
            patch.delenv(name)
        for name, value in bridge_env.items():
            patch.setenv(name, value)
        return load_settings()


@pytest.fixture(scope="module")
def generator(kustomization: Manifest, pod: Manifest) -> Manifest:
    """The configMapGenerator entry whose ConfigMap the sidecar mounts."""
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    generators: list[Manifest] = kustomization.get("configMapGenerator", [])
    found = [g for g in generators if g["name"] in mounted]
    assert len(found) == 1, "one generated ConfigMap holds the serving config"
    return found[0]


def _generator_files(generator: Manifest) -> dict[str, Path]:
    """configMapGenerator `files:` entries as key -> source file."""
    files: dict[str, Path] = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=")
        path = (K8S / source).resolve()
        files[key or path.name] = path
    return files


def _served(generator: Manifest, path: str) -> str:
    """The source file of a path the sidecar reads from the mounted ConfigMap."""
    files = _generator_files(generator)
    name = PurePosixPath(path).name
    assert name in files, f"{path} is not in the generated ConfigMap"
    return str(files[name])


def _mount(container: Manifest, pod: Manifest, volume_kind: str) -> tuple[Manifest, Manifest]:
    """(volume, mount) of the container's only mount of a volume of this kind."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    found = [
        (volumes[m["name"]], m)
        for m in container.get("volumeMounts", [])
        if volume_kind in volumes[m["name"]]
    ]
    assert len(found) == 1, f"{container['name']}: expected one {volume_kind} mount"
    return found[0]


def _quantity(text: str | int) -> Fraction:
    """A Kubernetes resource quantity ("128Mi", "100m", "2") as a number."""
    suffixes: dict[str, Fraction | int] = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
        "m": Fraction(1, 1000), "": 1,
    }  # fmt: skip
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text))
    assert match and match[2] in suffixes, f"not a quantity: {text!r}"
    return Fraction(match[1]) * suffixes[match[2]]


def _port(container: Manifest, port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named: dict[str, int] = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"{container['name']}: no port named {port!r}"
    return named[port]


def _defaults() -> dict[str, str]:
    return {name: default for name, default, _ in describe_settings()}


# -- kustomize ----------------------------------------------------------------------------


def test_every_manifest_is_a_resource(kustomization: Manifest) -> None:
    listed = set(kustomization["resources"])
    assert all((K8S / name).is_file() for name in listed), listed
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Optional parts are components (components/), not files left out of the list.
    assert on_disk - listed == set(), "a manifest kustomize would not apply"


def test_serving_config_is_the_serving_folders(generator: Manifest) -> None:
    files = _generator_files(generator)
    assert set(files) == {"models.config", "batching.config", "monitoring.config"}
    for key, path in files.items():
        # Below k8s/, for kustomize's default load restrictor; the same bytes as the
        # files `make serve` uses, which stay the ones to edit.
        assert path == SERVING_COPIES / key
        source = ROOT / "serving" / key
        assert path.read_bytes() == source.read_bytes(), (
            f"k8s/serving-config/{key} differs from serving/{key}: "
            f"cp serving/{key} k8s/serving-config/{key}"
        )


def test_serving_config_updates_reach_the_running_server(
    generator: Manifest, sidecar: Manifest, pod: Manifest, options: ServerOptions
) -> None:
    # --model_config_file_poll_wait_seconds only sees an edit if the ConfigMap keeps
    # its name (no hash suffix) and is mounted whole (subPath mounts never update).
    assert generator.get("options", {}).get("disableNameSuffixHash") is True
    _, mount = _mount(sidecar, pod, "configMap")
    assert "subPath" not in mount
    assert mount.get("readOnly") is True
    assert options.model_config_file_poll_wait_seconds > 0


# -- the bridge's settings -----------------------------------------------------------------


def test_config_map_values_are_strings(bridge_env: dict[str, str]) -> None:
    # kubectl rejects a ConfigMap with a number or boolean value.
    assert {k: v for k, v in bridge_env.items() if not isinstance(v, str)} == {}


def test_every_bridge_variable_is_a_setting(bridge_env: dict[str, str], bridge: Manifest) -> None:
    known = set(_defaults())
    names = set(bridge_env) | {e["name"] for e in bridge.get("env", [])}
    assert names, "no settings at all"
    assert {n for n in names if not n.startswith("BRIDGE_")} == set()
    assert names - known == set(), "not settings of bridge/settings.py"


def test_every_required_setting_is_provided(bridge_env: dict[str, str]) -> None:
    required = {name for name, default in _defaults().items() if default == "(required)"}
    assert required, "bridge/settings.py has required settings"
    assert required - set(bridge_env) == set()


def test_config_map_loads_as_settings(settings: Settings, bridge_env: dict[str, str]) -> None:
    assert settings.kafka.bootstrap_servers == bridge_env["BRIDGE_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings.serving.protocol == "grpc"
    assert settings.model.name == "fraud"
    assert settings.model.label == "stable"
    assert settings.log.format == "json"
    assert settings.kafka.sasl_password is None  # never in the ConfigMap


def test_kafka_secret_is_mounted_as_files(bridge: Manifest, pod: Manifest) -> None:
    # The *_FILE settings read it (components/kafka-sasl); never an env var.
    assert all("valueFrom" not in e for e in bridge.get("env", []))
    volume, mount = _mount(bridge, pod, "secret")
    assert volume["secret"]["optional"] is True  # clusters without SASL have no such Secret
    assert mount.get("readOnly") is True


# -- the tensorflow-serving sidecar --------------------------------------------------------


def test_sidecar_runs_the_server_with_flags_it_accepts(
    sidecar: Manifest, options: ServerOptions
) -> None:
    # The binary, not the image's entrypoint script (which adds --model_name and
    # --model_base_path), so the args are the whole command line parsed here.
    assert sidecar["command"] == [SERVER_BINARY]
    assert all(arg.startswith("--") for arg in sidecar["args"])
    assert options.model_config_file
    assert options.enable_batching
    assert options.monitoring_config_file


def test_sidecar_image_is_pinned(sidecar: Manifest) -> None:
    name, _, tag = sidecar["image"].rpartition(":")
    assert name == "tensorflow/serving"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a release, not {tag!r}"


def test_sidecar_config_files_are_the_mounted_config_map(
    sidecar: Manifest, pod: Manifest, generator: Manifest, options: ServerOptions
) -> None:
    _, mount = _mount(sidecar, pod, "configMap")
    keys = set(_generator_files(generator))
    for path in (
        options.model_config_file,
        options.batching_parameters_file,
        options.monitoring_config_file,
    ):
        file = PurePosixPath(path)
        assert file.parent == PurePosixPath(mount["mountPath"]), path
        assert file.name in keys, path


def test_model_config_serves_from_the_models_volume(
    sidecar: Manifest, pod: Manifest, options: ServerOptions, generator: Manifest
) -> None:
    config = model_config.read_model_server_config(_served(generator, options.model_config_file))
    model_config.validate_model_config_list(config.model_config_list)  # upstream's checks
    volume, mount = _mount(sidecar, pod, "persistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == "fraud-models"
    assert volume["persistentVolumeClaim"].get("readOnly") is True
    assert mount.get("readOnly") is True
    for model in config.model_config_list.config:
        assert model.base_path.startswith(mount["mountPath"].rstrip("/") + "/"), model.base_path
        if model.version_labels:
            # Labels on versions not loaded yet: refused at start without this flag.
            assert options.allow_version_labels_for_unavailable_models


def test_bridge_target_is_a_served_label(
    settings: Settings, options: ServerOptions, generator: Manifest
) -> None:
    config = model_config.read_model_server_config(_served(generator, options.model_config_file))
    models = {m.name: m for m in config.model_config_list.config}
    assert settings.model.name in models
    model = models[settings.model.name]
    if settings.model.label is not None:
        assert settings.model.label in model.version_labels
        version = model.version_labels[settings.model.label]
        if model.model_version_policy.HasField("specific"):
            # A label on a version outside the policy never becomes servable.
            assert version in model.model_version_policy.specific.versions


def test_bridge_batches_fit_the_server_batch_limit(
    settings: Settings, options: ServerOptions, generator: Manifest
) -> None:
    assert options.enable_batching
    params = model_config.read_batching_parameters(
        _served(generator, options.batching_parameters_file)
    )
    # A larger request fails with "Task size N is larger than maximum input batch size".
    assert settings.batch.max_size <= params.max_batch_size.value  # type: ignore[attr-defined]


# -- ports and probes ----------------------------------------------------------------------


def test_ports_agree(sidecar: Manifest, settings: Settings, options: ServerOptions) -> None:
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"grpc": options.port, "rest": options.rest_api_port}
    host, _, port = settings.serving.grpc_target.rpartition(":")
    assert host in ("127.0.0.1", "localhost")  # the sidecar, over the pod's loopback
    assert int(port) == options.port
    rest = urlsplit(settings.serving.rest_url)
    assert rest.hostname in ("127.0.0.1", "localhost")
    assert rest.port == options.rest_api_port


def test_probes_use_the_server_ports(sidecar: Manifest, options: ServerOptions) -> None:
    probes = [
        sidecar[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in sidecar
    ]
    assert len(probes) >= 2
    for probe in probes:
        if "httpGet" in probe:
            assert _port(sidecar, probe["httpGet"]["port"]) == options.rest_api_port
        elif "grpc" in probe:
            assert options.enable_grpc_healthcheck_service, "grpc probe without health service"
            assert _port(sidecar, probe["grpc"]["port"]) == options.port
        else:
            pytest.fail(f"unexpected probe {probe}")


def test_readiness_asks_for_the_bridge_model(sidecar: Manifest, settings: Settings) -> None:
    for key in ("startupProbe", "readinessProbe"):
        probe = sidecar[key]
        if "httpGet" in probe:
            assert probe["httpGet"]["path"] == f"/v1/models/{settings.model.name}"


def test_startup_probe_waits_for_the_model_load(sidecar: Manifest) -> None:
    probe = sidecar["startupProbe"]
    assert probe["failureThreshold"] * probe.get("periodSeconds", 10) >= 300


def test_liveness_does_not_depend_on_the_model_config(
    sidecar: Manifest, options: ServerOptions, generator: Manifest
) -> None:
    # A liveness check that failed on a models.config mistake would restart-loop the
    # server without fixing anything; the metrics route answers whatever the config.
    probe = sidecar.get("livenessProbe")
    if probe is not None and "httpGet" in probe:
        config = model_config.read_monitoring_config(
            _served(generator, options.monitoring_config_file)
        )
        prometheus = config.prometheus_config  # type: ignore[attr-defined]
        assert prometheus.enable
        assert probe["httpGet"]["path"] == prometheus.path


def test_prometheus_annotations_point_at_the_bridge_metrics(
    deployment: Manifest, bridge: Manifest, settings: Settings
) -> None:
    # The one port the NetworkPolicy opens to monitoring (TF Serving's stay closed).
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == settings.metrics.port
    assert _port(bridge, "metrics") == settings.metrics.port


def test_bridge_probes_its_health_endpoints(bridge: Manifest, settings: Settings) -> None:
    # The kubelet probes the pod's address: the bridge must listen on all of them.
    assert settings.metrics.port > 0
    assert settings.metrics.host == "0.0.0.0"
    paths = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for key, path in paths.items():
        probe = bridge[key]["httpGet"]
        assert probe["path"] == path, key
        assert _port(bridge, probe["port"]) == settings.metrics.port, key


# -- shutdown, resources, security -------------------------------------------------------


def _grace_ms(bridge_env: dict[str, str]) -> int:
    name = "BRIDGE_DELIVERY__SHUTDOWN_GRACE_MS"
    return int(bridge_env.get(name, _defaults()[name]))


def test_termination_grace_covers_the_bridge_shutdown(
    pod: Manifest, settings: Settings, bridge_env: dict[str, str]
) -> None:
    grace_ms = _grace_ms(bridge_env)
    assert grace_ms == settings.delivery.shutdown_grace_ms
    # The whole worst case, from the code's constants: tests/k8s/test_shutdown_budget.py.
    assert pod["terminationGracePeriodSeconds"] * 1000 > grace_ms


def test_sidecar_is_native_and_outlives_the_bridge(pod: Manifest, sidecar: Manifest) -> None:
    # An init container that keeps running (Kubernetes >= 1.29): started and probed
    # before the bridge, stopped after it, with no preStop sleep to order them.
    assert sidecar in pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert "lifecycle" not in sidecar
    assert "startupProbe" in sidecar  # what the bridge's start waits for
    assert [c["name"] for c in pod["containers"]] == ["bridge"]


def test_bridge_memory_fits_its_footprint(bridge: Manifest) -> None:
    resources = bridge["resources"]
    limit = _quantity(resources["limits"]["memory"])
    assert limit >= BRIDGE_RSS_MIB * 2**20
    assert _quantity(resources["requests"]["memory"]) <= limit
    assert _quantity(resources["requests"]["cpu"]) > 0


def test_sidecar_resources(sidecar: Manifest) -> None:
    resources = sidecar["resources"]
    assert _quantity(resources["requests"]["cpu"]) >= 1
    assert _quantity(resources["requests"]["memory"]) >= 2 * 2**30
    assert _quantity(resources["limits"]["memory"]) >= _quantity(resources["requests"]["memory"])


def test_containers_run_locked_down(pod: Manifest) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    for container in _containers(pod):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


# -- scaling ------------------------------------------------------------------------------


def _partitions(deployment: Manifest) -> int:
    return int(deployment["metadata"]["annotations"]["tfs-kafka-bridge/input-partitions"])


def test_replicas_do_not_exceed_the_partitions(deployment: Manifest) -> None:
    # components/hpa and components/keda remove `replicas` (tests/k8s/test_build.py).
    hpa = _one("HorizontalPodAutoscaler", _documents(K8S / "components" / "hpa" / "hpa.yaml"))
    assert 1 <= deployment["spec"]["replicas"] <= _partitions(deployment)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # Members past the partition count get no partition: they would only idle.
    assert hpa["spec"]["maxReplicas"] <= _partitions(deployment)
    containers = {c["name"] for c in _containers(deployment["spec"]["template"]["spec"])}
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "ContainerResource":
            assert metric["containerResource"]["container"] in containers


def test_selectors_match_the_pods(deployment: Manifest, resources: list[Manifest]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pdb = _one("PodDisruptionBudget", resources)
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1


# -- the bridge image ---------------------------------------------------------------------


def _pyproject() -> Manifest:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    parts = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in parts]


def test_bridge_image_tag_is_the_package_version(bridge: Manifest) -> None:
    name, _, tag = bridge["image"].rpartition(":")
    assert name.rpartition("/")[2] == "tfs-kafka-bridge"
    assert tag == _pyproject()["project"]["version"]


def test_dockerfile_builds_the_bridge_only(pod: Manifest) -> None:
    steps = _dockerfile()
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    # python:3.11-slim, optionally pinned by digest; both stages the same image, so the
    # virtualenv built in the first runs in the second.
    assert len(bases) == 2
    assert bases[0] == bases[1]
    assert re.fullmatch(r"python:3\.11-slim(@sha256:[0-9a-f]{64})?", bases[0]), bases[0]
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert len(installs) == 1
    assert re.search(r"pip install \.(\s|$)", installs[0]), "pip install . with no extras"
    users = [args for op, args in steps if op == "USER"]
    assert users, "runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric, so the kubelet can verify runAsNonRoot"
    assert int(uid) == pod["securityContext"]["runAsUser"]


def test_dockerfile_entrypoint_is_bridge_run(capsys: pytest.CaptureFixture[str]) -> None:
    entrypoints = [args for op, args in _dockerfile() if op == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    argv = json.loads(entrypoints[0])
    assert argv == ["bridge", "run"]
    # The console script exists, and `run` is one of its commands.
    target = _pyproject()["project"]["scripts"][argv[0]]
    module_name, _, function = target.partition(":")
    main = getattr(__import__(module_name, fromlist=[function]), function)
    with pytest.raises(SystemExit) as exited:
        main([*argv[1:], "--help"])
    assert exited.value.code == 0
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in capsys.readouterr().out


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "serving/models", "tests", "out"} <= patterns
