"""terminationGracePeriodSeconds covers the longest shutdown the code can take.

The budget is recomputed from the constants the shutdown uses (imported, not
copied) and the settings the pod gets from its ConfigMap; the same arithmetic is
written out in k8s/deployment.yaml's comment. No sockets, no subprocesses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge import app, service
from bridge.consume import IDLE_POLL_MS
from bridge.service import SHUTDOWN_STEP_S
from bridge.settings import describe_settings

yaml = pytest.importorskip("yaml", reason="reading the manifests needs pyyaml (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
# The bounded Kafka steps after the drain: flushing the producer (service.py); closing
# the salvage client, leaving the group, stopping the producer and the control-topic
# reader (app.py). The final commit is bounded apart (``Service._final_commit``).
BOUNDED_STEPS = {"service": 1, "app": 4}
# _final_commit retries until SHUTDOWN_STEP_S has passed, each try bounded by it: a try
# that starts just before the deadline ends up to one more step later, after a pause.
FINAL_COMMIT_S = 2 * SHUTDOWN_STEP_S + 0.1
# TF Serving gets SIGTERM once the bridge exited and stops without draining; the
# margin the kubelet must leave it before SIGKILL.
SIDECAR_STOP_S = 5.0


def _pod_and_env() -> tuple[dict[str, object], dict[str, str]]:
    deployment = yaml.safe_load((ROOT / "k8s" / "deployment.yaml").read_text())
    config = yaml.safe_load((ROOT / "k8s" / "bridge-config.yaml").read_text())
    defaults = {name: default for name, default, _ in describe_settings()}
    env = {**defaults, **config["data"]}
    return deployment["spec"]["template"]["spec"], env


def shutdown_budget_s(env: dict[str, str]) -> float:
    """The worst case from SIGTERM to the pod's last container exiting."""
    notice_s = max(IDLE_POLL_MS, int(env["BRIDGE_BATCH__MAX_WAIT_MS"])) / 1000
    drain_s = int(env["BRIDGE_DELIVERY__SHUTDOWN_GRACE_MS"]) / 1000
    steps_s = sum(BOUNDED_STEPS.values()) * SHUTDOWN_STEP_S
    return notice_s + drain_s + steps_s + FINAL_COMMIT_S + SIDECAR_STOP_S


def test_bounded_steps_are_all_counted() -> None:
    # A shutdown step added to (or removed from) the code must change the budget too.
    for module in (app, service):
        name = module.__name__.rpartition(".")[2]
        source = Path(module.__file__ or "").read_text()
        assert len(re.findall(r"await bounded\(", source)) == BOUNDED_STEPS[name], name


def test_termination_grace_covers_the_worst_case_shutdown() -> None:
    pod, env = _pod_and_env()
    budget = shutdown_budget_s(env)
    assert budget > int(env["BRIDGE_DELIVERY__SHUTDOWN_GRACE_MS"]) / 1000
    grace = pod["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert grace >= budget, f"terminationGracePeriodSeconds {grace} < worst case {budget:.1f} s"
    # The comment's total is this one, so the arithmetic shown stays the real one.
    text = (ROOT / "k8s" / "deployment.yaml").read_text()
    assert f"= {budget:.1f} s" in text
