"""Edits of a models.config (text-format ``ModelServerConfig``). Pure: no I/O.

Every edit returns a new message and leaves its argument alone, so a caller can
keep the config it started from and send it back to the server if a step fails.

The file is parsed with ``bridge.wire``'s ModelServerConfig, which declares only
the fields the bridge's operations need (name, base_path, model_platform,
model_version_policy, version_labels). A file using other fields is refused
rather than rewritten without them.

Writing the file back loses its comments: text format keeps none. The comment
block at the top of the file (before the first field) is kept as it was; other
comment lines are counted so the command can say they were dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format

from bridge.wire import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig

_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')


class ModelsConfigError(ValueError):
    """A models.config that cannot be used; the message says why."""


def parse_models_config(text: str) -> ModelServerConfig:
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelsConfigError(
            f"{exc} (bridge reads name, base_path, model_platform, model_version_policy and "
            "version_labels; a file with other fields has to be edited by hand)"
        ) from exc
    if config.WhichOneof("config") != "model_config_list":
        raise ModelsConfigError("it holds no model_config_list")
    return config


def split_header(text: str) -> tuple[str, str]:
    """(the comment block at the top, the rest): blank and ``#`` lines before the first field."""
    lines = text.splitlines(keepends=True)
    count = 0
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        count += 1
    return "".join(lines[:count]), "".join(lines[count:])


def count_comments(text: str) -> int:
    """Lines of ``text`` holding a ``#`` comment (outside quoted strings)."""
    return sum(1 for line in text.splitlines() if "#" in _QUOTED.sub("", line))


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    kept_comments: int  # comment lines of the original's top block, kept
    dropped_comments: int  # comment lines of the original that are not in ``text``


def render_models_config(config: ModelServerConfig, original: str = "") -> Rendered:
    """The file's new text: the original's top comment block, then the config."""
    header, body = split_header(original)
    if header and not header.endswith("\n"):
        header += "\n"
    text = header + text_format.MessageToString(config)
    if not text.endswith("\n"):
        text += "\n"
    return Rendered(text, count_comments(header), count_comments(body))


def model_names(config: ModelServerConfig) -> list[str]:
    return [model.name for model in config.model_config_list.config]


def find_model(config: ModelServerConfig, name: str) -> ModelConfig:
    for model in config.model_config_list.config:
        if model.name == name:
            return model
    known = ", ".join(model_names(config)) or "none"
    raise ModelsConfigError(f"model {name} is not in the config (it has: {known})")


def labels_of(model: ModelConfig) -> dict[str, int]:
    return dict(sorted(model.version_labels.items()))


def policy_kind(model: ModelConfig) -> str:
    """``latest``, ``all`` or ``specific`` (an unset policy is TF Serving's latest 1)."""
    return model.model_version_policy.WhichOneof("policy_choice") or "latest"


def specific_versions(model: ModelConfig) -> list[int] | None:
    """The versions of a specific policy, ascending; None for latest and all."""
    if policy_kind(model) != "specific":
        return None
    return sorted(set(model.model_version_policy.specific.versions))


def describe_policy(model: ModelConfig) -> str:
    kind = policy_kind(model)
    if kind == "specific":
        versions = specific_versions(model) or []
        return "specific {" + ", ".join(str(v) for v in versions) + "}"
    if kind == "all":
        return "all"
    policy = model.model_version_policy
    count = policy.latest.num_versions if policy.HasField("latest") else 1
    return f"latest {{num_versions: {max(count, 1)}}}"


@dataclass(frozen=True, slots=True)
class PolicyChange:
    config: ModelServerConfig
    changed: bool
    note: str | None = None  # said to the operator when the policy kind changed


def _copy(config: ModelServerConfig) -> ModelServerConfig:
    copy = ModelServerConfig()
    copy.CopyFrom(config)
    return copy


def _set_specific(model: ModelConfig, versions: set[int]) -> None:
    model.model_version_policy.Clear()
    model.model_version_policy.specific.SetInParent()  # {} stays specific, not unset
    model.model_version_policy.specific.versions.extend(sorted(versions))


def with_version_loaded(
    config: ModelServerConfig, name: str, version: int, available: set[int] | frozenset[int]
) -> PolicyChange:
    """Step one of a label move: the model's policy also loads ``version``.

    A specific policy gains the version. A latest or all policy cannot name a
    version, so it becomes specific: the versions AVAILABLE now (``available``,
    from GetModelStatus) plus ``version``, which keeps what serves now serving.
    """
    result = _copy(config)
    model = find_model(result, name)
    current = specific_versions(model)
    if current is not None:
        if version in current:
            return PolicyChange(result, changed=False)
        _set_specific(model, {*current, version})
        return PolicyChange(result, changed=True)
    before = describe_policy(model)
    _set_specific(model, {*available, version})
    note = (
        f"the version policy of {name} was {before}; it is now {describe_policy(model)} "
        f"(the versions AVAILABLE now plus {version}): new versions on disk are no longer "
        "loaded by themselves"
    )
    return PolicyChange(result, changed=True, note=note)


def with_label(config: ModelServerConfig, name: str, label: str, version: int) -> ModelServerConfig:
    """Step two of a label move: ``label`` points at ``version``."""
    result = _copy(config)
    find_model(result, name).version_labels[label] = version
    return result


def unlabelled_versions(model: ModelConfig) -> list[int]:
    """Versions a specific policy loads that no label points at."""
    labelled = set(model.version_labels.values())
    return [v for v in specific_versions(model) or [] if v not in labelled]


def without_unlabelled(config: ModelServerConfig, name: str) -> tuple[ModelServerConfig, list[int]]:
    """The policy keeps only labelled versions; returns the config and the versions dropped."""
    result = _copy(config)
    model = find_model(result, name)
    dropped = unlabelled_versions(model)
    labelled = set(model.version_labels.values())
    if dropped and labelled:
        _set_specific(model, set(specific_versions(model) or []) - set(dropped))
        return result, dropped
    return result, []
