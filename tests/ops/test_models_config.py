"""Pure edits of a models.config: the two steps of a label move, rendering, comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.ops.models_config import (
    ModelsConfigError,
    count_comments,
    describe_policy,
    find_model,
    labels_of,
    parse_models_config,
    render_models_config,
    specific_versions,
    split_header,
    unlabelled_versions,
    with_label,
    with_version_loaded,
    without_unlabelled,
)

REPO = Path(__file__).resolve().parents[2]

TWO_MODELS = """\
# top comment
# second line

model_config_list {
  config {
    name: "fraud"
    base_path: "/models/fraud"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 2 versions: 1 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  # a comment inside
  config {
    name: "churn"
    base_path: "/models/churn#1"  # trailing comment
    model_platform: "tensorflow"
  }
}
"""


def test_the_shipped_models_config_parses() -> None:
    config = parse_models_config((REPO / "serving" / "models.config").read_text())
    fraud = find_model(config, "fraud")
    assert labels_of(fraud) == {"canary": 2, "stable": 1}
    assert specific_versions(fraud) == [1, 2]


def test_policies_are_described_as_tf_serving_reads_them() -> None:
    config = parse_models_config(TWO_MODELS)
    assert describe_policy(find_model(config, "fraud")) == "specific {1, 2}"
    assert describe_policy(find_model(config, "churn")) == "latest {num_versions: 1}"
    other = parse_models_config(
        'model_config_list { config { name: "a" model_version_policy { all {} } }'
        ' config { name: "b" model_version_policy { latest { num_versions: 3 } } } }'
    )
    assert describe_policy(find_model(other, "a")) == "all"
    assert describe_policy(find_model(other, "b")) == "latest {num_versions: 3}"


def test_unknown_fields_are_refused_rather_than_lost() -> None:
    with pytest.raises(ModelsConfigError, match="logging_config"):
        parse_models_config('model_config_list { config { name: "x" logging_config {} } }')


def test_a_config_without_a_model_list_is_refused() -> None:
    with pytest.raises(ModelsConfigError, match="model_config_list"):
        parse_models_config("")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(
        ModelsConfigError, match=r"model nope is not in the config \(it has: fraud, churn\)"
    ):
        find_model(parse_models_config(TWO_MODELS), "nope")


def test_step_one_adds_the_version_to_a_specific_policy_and_keeps_the_labels() -> None:
    config = parse_models_config(TWO_MODELS)
    change = with_version_loaded(config, "fraud", 3, available={1, 2})
    assert change.changed and change.note is None
    fraud = find_model(change.config, "fraud")
    assert specific_versions(fraud) == [1, 2, 3]
    assert labels_of(fraud) == {"canary": 2, "stable": 1}
    # The argument is left alone: it is what a failed move restores.
    assert specific_versions(find_model(config, "fraud")) == [1, 2]
    # The other model is untouched.
    assert find_model(change.config, "churn") == find_model(config, "churn")


def test_step_one_is_a_no_op_when_the_version_is_already_in_the_policy() -> None:
    config = parse_models_config(TWO_MODELS)
    change = with_version_loaded(config, "fraud", 2, available={1, 2})
    assert not change.changed
    assert change.config == config


@pytest.mark.parametrize(
    ("policy", "before"),
    [
        ("", "latest {num_versions: 1}"),
        ("model_version_policy { latest { num_versions: 2 } }", "latest {num_versions: 2}"),
        ("model_version_policy { all {} }", "all"),
    ],
)
def test_step_one_turns_latest_and_all_into_specific_with_what_serves_now(
    policy: str, before: str
) -> None:
    config = parse_models_config(f'model_config_list {{ config {{ name: "m" {policy} }} }}')
    change = with_version_loaded(config, "m", 7, available={4, 5})
    assert change.changed
    assert specific_versions(find_model(change.config, "m")) == [4, 5, 7]
    assert change.note is not None
    assert before in change.note and "specific {4, 5, 7}" in change.note
    assert "no longer loaded by themselves" in change.note


def test_step_two_points_the_label_and_changes_nothing_else() -> None:
    config = with_version_loaded(parse_models_config(TWO_MODELS), "fraud", 3, {1, 2}).config
    moved = with_label(config, "fraud", "stable", 3)
    fraud = find_model(moved, "fraud")
    assert labels_of(fraud) == {"canary": 2, "stable": 3}
    assert specific_versions(fraud) == [1, 2, 3]
    assert labels_of(find_model(config, "fraud"))["stable"] == 1
    new_label = with_label(config, "fraud", "shadow", 1)
    assert labels_of(find_model(new_label, "fraud"))["shadow"] == 1


def test_unlabelled_versions_and_unloading_them() -> None:
    config = with_label(
        with_version_loaded(parse_models_config(TWO_MODELS), "fraud", 3, {1, 2}).config,
        "fraud",
        "stable",
        3,
    )
    assert unlabelled_versions(find_model(config, "fraud")) == [1]
    trimmed, dropped = without_unlabelled(config, "fraud")
    assert dropped == [1]
    assert specific_versions(find_model(trimmed, "fraud")) == [2, 3]
    # Nothing to drop: the same config back.
    again, none = without_unlabelled(trimmed, "fraud")
    assert none == [] and again == trimmed


def test_rendering_keeps_the_top_comment_block_and_counts_the_lost_comments() -> None:
    config = parse_models_config(TWO_MODELS)
    rendered = render_models_config(with_label(config, "fraud", "stable", 2), TWO_MODELS)
    assert rendered.text.startswith("# top comment\n# second line\n\nmodel_config_list {\n")
    assert rendered.text.endswith("}\n") and not rendered.text.endswith("\n\n")
    assert rendered.kept_comments == 2
    assert rendered.dropped_comments == 2  # "# a comment inside", "# trailing comment"
    assert "#1" in rendered.text  # a '#' inside a string is no comment
    reparsed = parse_models_config(rendered.text)
    assert labels_of(find_model(reparsed, "fraud")) == {"canary": 2, "stable": 2}
    assert find_model(reparsed, "churn").base_path == "/models/churn#1"


def test_rendering_without_an_original_is_just_the_config() -> None:
    config = parse_models_config(TWO_MODELS)
    rendered = render_models_config(config)
    assert rendered.text.startswith("model_config_list {")
    assert rendered.text.endswith("\n")
    assert (rendered.kept_comments, rendered.dropped_comments) == (0, 0)
    assert parse_models_config(rendered.text) == config


def test_split_header_and_count_comments() -> None:
    header, body = split_header("# a\n\n  # b\nmodel_config_list {}\n# c\n")
    assert header == "# a\n\n  # b\n"
    assert body == "model_config_list {}\n# c\n"
    assert count_comments(body) == 1
    assert count_comments("x: \"a # b\"\ny: '#'  # real\n") == 1
