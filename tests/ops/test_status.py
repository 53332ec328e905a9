"""``serving status`` rendering: labels beside versions, warnings, errors. Pure."""

from __future__ import annotations

from pathlib import Path

import grpc

from bridge.ops.models_config import parse_models_config
from bridge.ops.status import ModelReport, render_status, reports_from_config
from bridge.serving.model_service import VersionStatus

OK, UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN

CONFIG = """\
model_config_list {
  config {
    name: "fraud"
    base_path: "/models/fraud"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
    version_labels { key: "next" value: 5 }
  }
  config { name: "churn" base_path: "/models/churn" }
}
"""


def test_reports_take_labels_and_policy_from_the_config() -> None:
    reports = reports_from_config(parse_models_config(CONFIG), None)
    assert [r.name for r in reports] == ["fraud", "churn"]
    fraud = reports[0]
    assert fraud.labels == {"canary": 2, "next": 5, "stable": 1}
    assert fraud.policy == "specific {1, 2}"
    assert fraud.on_disk is None  # /models/fraud is the container's path, not readable here
    only = reports_from_config(parse_models_config(CONFIG), "churn")
    assert [(r.name, r.labels, r.policy) for r in only] == [
        ("churn", {}, "latest {num_versions: 1}")
    ]
    assert reports_from_config(None, "fraud")[0].labels is None


def test_render_aligns_versions_with_their_labels_and_warns_about_odd_ones() -> None:
    fraud, churn = reports_from_config(parse_models_config(CONFIG), None)
    fraud.versions = [
        VersionStatus(3, "END", UNKNOWN, "Could not load"),
        VersionStatus(2, "AVAILABLE", OK, ""),
        VersionStatus(1, "AVAILABLE", OK, ""),
    ]
    churn.error = "NOT_FOUND: Could not find any versions of model churn"
    text = render_status([fraud, churn], "tfs:8500", Path("/etc/models.config"), {"fraud", "churn"})
    assert text.splitlines() == [
        "server tfs:8500",
        "models.config /etc/models.config",
        "",
        "fraud  base_path /models/fraud  policy specific {1, 2}  on disk: not readable here",
        "  VERSION  STATE      LABELS  ERROR",
        "  3        END        -       UNKNOWN: Could not load",
        "  2        AVAILABLE  canary",
        "  1        AVAILABLE  stable",
        "  warning: label next points at version 5, which is not known to the server",
        "",
        "churn  base_path /models/churn  policy latest {num_versions: 1}  "
        "on disk: not readable here",
        "  error: NOT_FOUND: Could not find any versions of model churn",
    ]
    assert fraud.to_json()["warnings"] == [
        "label next points at version 5, which is not known to the server"
    ]


def test_render_without_a_models_config_says_labels_are_unknown() -> None:
    report = ModelReport("fraud", versions=[VersionStatus(1, "AVAILABLE", OK, "")])
    text = render_status([report], "tfs:8500", None, set())
    assert "models.config (none: labels unknown)" in text
    assert "  1        AVAILABLE  -" in text
