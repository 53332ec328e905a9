"""``bridge serving status``: versions and states from the server, labels from models.config.

TF Serving has no API that lists version labels, so they come from the
models.config the server was started with; the versions and their states come
from GetModelStatus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import ModelCallError, ServerUnavailableError
from bridge.ops.disk import readable_base, versions_on_disk
from bridge.ops.models_config import (
    ModelServerConfig,
    describe_policy,
    labels_of,
    model_names,
)
from bridge.ops.output import table
from bridge.serving.model_service import ModelServiceClient, VersionStatus


@dataclass
class ModelReport:
    name: str
    versions: list[VersionStatus] = field(default_factory=list)
    labels: dict[str, int] | None = None  # None: no models.config to read them from
    base_path: str | None = None
    policy: str | None = None
    on_disk: list[int] | None = None  # None: base_path not readable here
    error: str | None = None  # GetModelStatus failed

    @property
    def warnings(self) -> list[str]:
        found: list[str] = []
        if self.error is not None or self.labels is None:
            return found
        states = {status.version: status.state for status in self.versions}
        for label, version in self.labels.items():
            state = states.get(version)
            if state != "AVAILABLE":
                found.append(
                    f"label {label} points at version {version}, which is "
                    + ("not known to the server" if state is None else state)
                )
        return found

    def labels_for(self, version: int) -> list[str]:
        return sorted(label for label, v in (self.labels or {}).items() if v == version)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_path": self.base_path,
            "policy": self.policy,
            "labels": self.labels,
            "on_disk": self.on_disk,
            "versions": [
                {
                    "version": status.version,
                    "state": status.state,
                    "error_code": status.error_code.name,
                    "error_message": status.error_message,
                    "labels": self.labels_for(status.version),
                }
                for status in self.versions
            ],
            "error": self.error,
            "warnings": self.warnings,
        }


def reports_from_config(config: ModelServerConfig | None, only: str | None) -> list[ModelReport]:
    """One report per model to show, with what models.config says about it."""
    if config is None:
        return [ModelReport(only)] if only is not None else []
    names = [only] if only is not None else model_names(config)
    reports = []
    for name in names:
        entry = next((m for m in config.model_config_list.config if m.name == name), None)
        if entry is None:
            reports.append(ModelReport(name))  # not in the file: no labels to show
            continue
        base = readable_base(entry.base_path)
        reports.append(
            ModelReport(
                name,
                labels=labels_of(entry),
                base_path=entry.base_path,
                policy=describe_policy(entry),
                on_disk=sorted(versions_on_disk(base)) if base is not None else None,
            )
        )
    return reports


async def fill_versions(reports: list[ModelReport], service: ModelServiceClient) -> None:
    for report in reports:
        try:
            report.versions = await service.status(report.name)
        except ServerUnavailableError as exc:
            report.error = f"cannot reach the model server at {service.target}: {exc.message}"
        except ModelCallError as exc:
            report.error = f"{exc.status}: {exc.message}"


def render_status(
    reports: list[ModelReport], target: str, models_config: Path | None, in_config: set[str]
) -> str:
    lines = [f"server {target}", f"models.config {models_config or '(none: labels unknown)'}"]
    for report in reports:
        lines.append("")
        facts = [report.name]
        if report.base_path is not None:
            facts.append(f"base_path {report.base_path}")
        if report.policy is not None:
            facts.append(f"policy {report.policy}")
        if report.on_disk is not None:
            facts.append("on disk " + (", ".join(str(v) for v in report.on_disk) or "none"))
        elif report.base_path is not None:
            facts.append("on disk: not readable here")
        lines.append("  ".join(facts))
        if models_config is not None and report.name not in in_config:
            lines.append(f"  not in {models_config}: labels unknown")
        if report.error is not None:
            lines.append(f"  error: {report.error}")
            continue
        rows = [
            [
                str(status.version),
                status.state,
                ",".join(report.labels_for(status.version)) or "-",
                status.error,
            ]
            for status in report.versions
        ]
        lines.append(table(["VERSION", "STATE", "LABELS", "ERROR"], rows, indent="  "))
        lines.extend(f"  warning: {warning}" for warning in report.warnings)
    return "\n".join(lines)
