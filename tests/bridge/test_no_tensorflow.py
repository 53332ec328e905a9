"""The bridge's runtime stays small: no module under ``bridge`` imports TensorFlow, and
what it does not use is not loaded."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import bridge

SCRIPT = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def _top_level_modules_after_importing(modules: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(modules)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout))


def test_importing_every_bridge_module_leaves_tensorflow_out() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(bridge.__path__, "bridge."))
    assert "bridge.app" in modules and "bridge.serving.grpc_client" in modules
    loaded = _top_level_modules_after_importing([m for m in modules if m != "bridge.__main__"])
    assert "bridge" in loaded
    assert not loaded & {"tensorflow", "tensorflow_serving", "keras"}


def test_the_service_does_not_even_need_numpy() -> None:
    service = sorted(
        m.name
        for m in pkgutil.walk_packages(bridge.__path__, "bridge.")
        if m.name != "bridge.__main__"
    )
    loaded = _top_level_modules_after_importing(service)
    assert "aiokafka" in loaded
    assert "numpy" not in loaded


def test_a_bridge_that_serves_no_metrics_does_not_load_prometheus_client() -> None:
    # What `bridge run` imports with BRIDGE_METRICS__PORT=0: the metrics are counted, and
    # the library is loaded at the first scrape only.
    running = ["bridge.cli", "bridge.app", "bridge.serving.grpc_client", "bridge.metrics"]
    loaded = _top_level_modules_after_importing(running)
    assert "grpc" in loaded
    assert "prometheus_client" not in loaded
