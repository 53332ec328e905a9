"""The commands' wiring, settings and refusals that need no server and no broker."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bridge.domain import Signature, Target
from bridge.errors import ModelNotFoundError, RejectedInputError, ServerUnavailableError
from bridge.ops import commands
from bridge.ops.errors import CommandError
from bridge.ops.routes import check_targets
from bridge.pipeline.routing import parse_assignments
from tests.ops.servers import fake_models_config

CLOSED = "127.0.0.1:1"  # nothing listens there; these tests never get as far as connecting


def run(argv: list[str]) -> int:
    return commands.main(argv)


def test_add_commands_registers_serving_and_routes_with_handlers() -> None:
    parser = argparse.ArgumentParser(prog="bridge")
    subparsers = parser.add_subparsers(dest="command", required=True)
    parser_run = subparsers.add_parser("run")  # the lead's command lives beside them
    assert parser_run is not None
    commands.add_commands(subparsers)
    cases = {
        ("serving", "status"): commands.run_serving_status,
        ("serving", "label", "fraud", "stable", "2"): commands.run_serving_label,
        ("routes", "show"): commands.run_routes_show,
        ("routes", "set", "fraud", "stable=1"): commands.run_routes_set,
    }
    for argv, handler in cases.items():
        assert parser.parse_args(list(argv)).handler is handler
    args = parser.parse_args(["serving", "label", "fraud", "stable", "0002", "--timeout", "5"])
    assert (args.model, args.label, args.version, args.timeout) == ("fraud", "stable", 2, 5.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["serving"],
        ["serving", "label", "fraud", "stable"],
        ["serving", "label", "fraud", "stable", "0"],
        ["serving", "label", "fraud", "stable", "two"],
        ["routes", "set", "fraud"],
        ["routes", "show", "--timeout", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(argv)
    assert exited.value.code == 2


def test_label_without_a_models_config_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["serving", "label", "fraud", "stable", "2", "--grpc-target", CLOSED]) == 2
    assert "set BRIDGE_SERVING__MODELS_CONFIG or pass --models-config" in capsys.readouterr().err


def test_status_of_everything_needs_a_models_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serving", "status", "--grpc-target", CLOSED]) == 2
    assert "set BRIDGE_SERVING__MODELS_CONFIG or pass --models-config" in capsys.readouterr().err


def test_settings_come_from_the_environment_and_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_SERVING__MODELS_CONFIG", str(tmp_path / "from-env.config"))
    assert run(["serving", "label", "fraud", "stable", "2"]) == 2
    assert (
        "cannot read models.config " + str(tmp_path / "from-env.config") in capsys.readouterr().err
    )
    flag = tmp_path / "from-flag.config"
    flag.write_text("model_config_list { config { name: 'x' unknown_field: 1 } }\n")
    assert run(["serving", "label", "fraud", "stable", "2", "--models-config", str(flag)]) == 2
    err = capsys.readouterr().err
    assert f"cannot use models.config {flag}" in err and "unknown_field" in err


def test_invalid_settings_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_SERVING__TIMEOUT_MS", "soon")
    assert run(["serving", "status", "fraud"]) == 2
    assert "BRIDGE_SERVING__TIMEOUT_MS" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["7", " "])
def test_a_label_must_be_a_name(
    label: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fake_models_config(tmp_path)
    assert run(["serving", "label", "fraud", label, "2", "--models-config", str(path)]) == 2
    assert "cannot be a label" in capsys.readouterr().err


def test_a_version_missing_on_disk_is_refused_before_the_server_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fake_models_config(tmp_path)
    before = path.read_text()
    argv = ["serving", "label", "fraud", "stable", "3", "--models-config", str(path)]
    assert run([*argv, "--grpc-target", CLOSED]) == 1
    base = tmp_path / "models" / "fraud"
    assert (
        f"version 3 of model fraud does not exist on disk under {base}" in capsys.readouterr().err
    )
    assert path.read_text() == before


def test_a_model_missing_from_the_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fake_models_config(tmp_path)
    argv = ["serving", "label", "churn", "stable", "1", "--models-config", str(path)]
    assert run([*argv, "--grpc-target", CLOSED]) == 1
    assert "model churn is not in the config (it has: fraud)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["routes", "show", "--topic", "c"], "set BRIDGE_KAFKA__BOOTSTRAP_SERVERS or pass"),
        (["routes", "show", "--bootstrap-servers", CLOSED], "set BRIDGE_TOPICS__CONTROL or pass"),
        (["routes", "set", "fraud", "stable=1", "--topic", "c"], "BRIDGE_KAFKA__BOOTSTRAP"),
    ],
)
def test_routes_need_a_broker_and_a_topic(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["stable"], "expected TARGET=WEIGHT"),
        (["stable=1", "stable=2"], "stable is named twice"),
        (["stable=0"], "positive total weight"),
        (["stable=1", "shadow:canary=2"], "shadow fraction"),
    ],
)
def test_bad_routes_are_a_usage_error_before_anything_is_asked(
    assignments: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", CLOSED)
    monkeypatch.setenv("BRIDGE_TOPICS__CONTROL", "control")
    assert run(["routes", "set", "fraud", *assignments]) == 2
    assert message in capsys.readouterr().err


class _Server:
    """A ModelClient whose server knows some labels and versions."""

    def __init__(self, labels: set[str], versions: set[int], up: bool = True) -> None:
        self.labels, self.versions, self.up = labels, versions, up
        self.asked: list[Target] = []

    async def get_signature(self, target: Target) -> Signature:
        self.asked.append(target)
        if not self.up:
            raise ServerUnavailableError("connection refused")
        if target.label is not None and target.label not in self.labels:
            raise RejectedInputError(
                f"Unrecognized servable version label: {target.label}",
                grpc_status="INVALID_ARGUMENT",
            )
        if target.version is not None and target.version not in self.versions:
            raise ModelNotFoundError(
                f"Servable not found for request: Specific({target.model}, {target.version})",
                grpc_status="NOT_FOUND",
            )
        return Signature(target.model, 1, target.signature, {}, {})

    async def predict(self, *args: object) -> None:
        raise NotImplementedError

    async def is_ready(self, target: Target) -> bool:
        return self.up

    async def aclose(self) -> None:
        return None


async def test_check_targets_asks_for_every_named_target_once() -> None:
    routes = parse_assignments("fraud", ["stable=90", "canary=10", "2=0", "shadow:canary=0.5"])
    assert [name for name, _ in routes.named_targets()] == ["stable", "canary", "2"]
    server = _Server({"stable", "canary"}, {2})
    await check_targets(server, routes, "serving_default", "tfs:8500")  # type: ignore[arg-type]
    assert [str(t) for t in server.asked] == ["fraud@stable", "fraud@canary", "fraud@2"]


async def test_check_targets_names_each_unknown_target() -> None:
    routes = parse_assignments("fraud", ["stable=90", "canry=10", "7=1", "shadow:8=0.1"])
    with pytest.raises(CommandError) as refused:
        await check_targets(_Server({"stable"}, {1}), routes, "serving_default", "tfs:8500")  # type: ignore[arg-type]
    message = refused.value.message
    assert "nothing was written" in message
    assert "label canry of model fraud: INVALID_ARGUMENT: Unrecognized servable version label" in (
        message
    )
    assert "version 7 of model fraud: NOT_FOUND" in message
    assert "version 8 of model fraud: NOT_FOUND" in message
    assert "stable" not in message.split("written:")[1]


async def test_check_targets_with_the_server_down_says_how_to_skip_the_check() -> None:
    routes = parse_assignments("fraud", ["stable=1"])
    with pytest.raises(
        CommandError, match=r"cannot reach the model server at tfs:8500.*--no-check"
    ):
        await check_targets(_Server(set(), set(), up=False), routes, "x", "tfs:8500")  # type: ignore[arg-type]
