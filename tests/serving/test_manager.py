"""ModelManager against real SavedModels on disk: policies, transitions, labels, reloads.

Waiting is done by polling the manager's state with a deadline (``wait_until``),
never by sleeping for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError
from serving.manager import ModelManager
from serving.model_config import read_model_server_config, single_model_config
from serving.options import ServerOptions
from serving.servable import LoadedVersion
from tests.serving.toy_models import ModelStore

ModelDirFactory = Callable[..., Path]
State = get_model_status_pb2.ModelVersionStatus.State

FAST = 0.02  # poll interval for tests that poll
WAIT_LIMIT_SECONDS = 20.0  # a guard against hanging, never a measurement


def make_options(**overrides: Any) -> ServerOptions:
    settings: dict[str, Any] = {
        "file_system_poll_wait_seconds": -1,  # tests that need polling turn it on
        "max_num_load_retries": 0,
        "load_retry_interval_micros": 1000,
    }
    settings.update(overrides)
    return ServerOptions(**settings)


def entry(
    name: str, base_path: Path, policy: str = "", labels: dict[str, int] | None = None
) -> str:
    label_text = "".join(
        f'version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items()
    )
    policy_text = f"model_version_policy {{ {policy} }}" if policy else ""
    return (
        f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" '
        f"{policy_text} {label_text} }}"
    )


def server_config(*entries: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(
        f"model_config_list {{ {' '.join(entries)} }}",
        model_server_config_pb2.ModelServerConfig(),
    )


def spec(name: str, version: int | None = None, label: str | None = None) -> model_pb2.ModelSpec:
    model_spec = model_pb2.ModelSpec(name=name)
    if version is not None:
        model_spec.version.value = version
    if label is not None:
        model_spec.version_label = label
    return model_spec


def states(manager: ModelManager, name: str) -> dict[int, str]:
    """Version -> state name, in the order status() lists them."""
    try:
        listed = manager.status(name, None)
    except ServingError:
        return {}
    return {status.version: State.Name(status.state) for status in listed}


def served(version: LoadedVersion) -> float:
    """Run the scale model: its output is the version that computed it."""
    out = version.run("serving_default", {"x": np.array([1.0], np.float32)}, ["y"])
    return float(out["y"][0])


def error_of(call: Callable[[], object]) -> ServingError:
    with pytest.raises(ServingError) as caught:
        call()
    return caught.value


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll the manager's observable state until ``condition`` holds (or fail)."""
    async with asyncio.timeout(WAIT_LIMIT_SECONDS):
        # Polling on purpose: the test watches state from outside, as a client would.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture
async def managers() -> AsyncIterator[Callable[[ServerOptions], ModelManager]]:
    created: list[ModelManager] = []

    def make(options: ServerOptions) -> ModelManager:
        created.append(ModelManager(options))
        return created[-1]

    yield make
    for manager in created:
        await manager.close()


Managers = Callable[[ServerOptions], ModelManager]


# -- version policies and discovery -------------------------------------------


async def test_latest_policy_serves_only_the_highest_version(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    base = model_dir("m", versions=(1, 2, 3))
    manager = managers(make_options())
    await manager.start(single_model_config("m", str(base)))
    assert states(manager, "m") == {3: "AVAILABLE"}
    assert served(manager.resolve(spec("m"))) == 3.0
    assert manager.model_names() == ["m"]
    (status,) = manager.status("m", 3)
    assert (status.status.error_code, status.status.error_message) == (0, "")
    assert manager.load_attempts == {(str(base / "3"), "success"): 1}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest { num_versions: 2 }", [3, 2]),
        ("all {}", [3, 2, 1]),
        # 7 is not on disk: upstream warns and serves the others.
        ("specific { versions: 1 versions: 3 versions: 7 }", [3, 1]),
    ],
)
async def test_version_policies(
    managers: Managers, model_dir: ModelDirFactory, policy: str, expected: list[int]
) -> None:
    base = model_dir("m", versions=(1, 2, 3))
    manager = managers(make_options())
    await manager.start(server_config(entry("m", base, policy)))
    # Highest first, as GetModelStatus lists them.
    assert list(states(manager, "m").items()) == [(v, "AVAILABLE") for v in expected]
    for version in expected:
        assert served(manager.resolve(spec("m", version))) == version
    assert manager.resolve(spec("m")).version == expected[0]


async def test_discovery_reads_numeric_directories_with_a_saved_model(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base = model_dir("m", versions=())
    model_store.install(base, 123, dirname="00000123")  # parses as 123
    model_store.install(base, 1, dirname="export")  # not a number: ignored
    (base / "200").mkdir()  # no saved_model.pb (yet): ignored
    (base / "300").write_text("a file, not a version directory")
    manager = managers(make_options())
    await manager.start(server_config(entry("m", base, "all {}")))
    assert states(manager, "m") == {123: "AVAILABLE"}
    assert served(manager.resolve(spec("m", 123))) == 123.0
    assert manager.resolve(spec("m")).path == str(base / "00000123")


# -- the error rows of resolve() and status() ------------------------------


async def test_resolve_error_rows(managers: Managers, model_dir: ModelDirFactory) -> None:
    manager = managers(make_options())
    # Before any config: the label map does not exist yet (label appended verbatim).
    failure = error_of(lambda: manager.resolve(spec("m", label="stable")))
    assert failure.code == grpc.StatusCode.UNAVAILABLE
    assert failure.message == "Model labels does not init yet.stable"

    await manager.start(single_model_config("m", str(model_dir("m", versions=(2,)))))
    rows = [
        (spec(""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (spec("", version=2), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (spec("nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (
            spec("nope", version=2),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(nope, 2)",
        ),
        (
            spec("m", version=3),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(m, 3)",
        ),
        (
            spec("m", label="gold"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: gold",
        ),
    ]
    for model_spec, code, message in rows:
        failure = error_of(lambda s=model_spec: manager.resolve(s))  # type: ignore[misc]
        assert (failure.code, failure.message) == (code, message)


async def test_status_error_rows(managers: Managers, model_dir: ModelDirFactory) -> None:
    manager = managers(make_options())
    await manager.start(server_config(entry("m", model_dir("m", versions=(1, 2)), "all {}")))
    failure = error_of(lambda: manager.status("nope", None))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.message == "Could not find any versions of model nope"
    failure = error_of(lambda: manager.status("m", 3))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.message == "Could not find version 3 of model m"
    assert [s.version for s in manager.status("m", None)] == [2, 1]
    assert [s.version for s in manager.status("m", 1)] == [1]


# -- transitions ---------------------------------------------------------------


async def test_new_version_loads_before_the_old_unloads_and_in_flight_requests_finish(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base = model_dir("m", versions=(1,))
    manager = managers(make_options(file_system_poll_wait_seconds=FAST))
    await manager.start(single_model_config("m", str(base)))
    old = manager.resolve(spec("m"))
    with contextlib.ExitStack() as request:
        request.enter_context(old.in_flight())  # a request still running on version 1
        model_store.install(base, 2)

        def switched() -> bool:
            # Availability is preserved: Latest always finds a version meanwhile.
            assert manager.resolve(spec("m")).version in (1, 2)
            return states(manager, "m") == {2: "AVAILABLE", 1: "UNLOADING"}

        await wait_until(switched)
        assert served(manager.resolve(spec("m"))) == 2.0
        failure = error_of(lambda: manager.resolve(spec("m", 1)))
        assert failure.code == grpc.StatusCode.NOT_FOUND
        assert failure.message == "Servable not found for request: Specific(m, 1)"
        # The request in flight finishes normally on the version it started with,
        # and holds that version in UNLOADING until it is done.
        assert served(old) == 1.0
        assert states(manager, "m")[1] == "UNLOADING"
    await wait_until(lambda: states(manager, "m") == {2: "AVAILABLE", 1: "END"})
    (ended,) = manager.status("m", 1)
    assert (ended.status.error_code, ended.status.error_message) == (0, "")


async def test_a_failed_new_version_keeps_the_old_one_serving(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base = model_dir("m", versions=(1,))
    manager = managers(make_options(file_system_poll_wait_seconds=FAST, max_num_load_retries=2))
    await manager.start(single_model_config("m", str(base)))
    model_store.install(base, 2, kind="broken")
    await wait_until(lambda: states(manager, "m").get(2) == "END")
    assert states(manager, "m") == {2: "END", 1: "AVAILABLE"}
    (failed,) = manager.status("m", 2)
    assert failed.status.error_code == grpc.StatusCode.DATA_LOSS.value[0]
    assert (
        failed.status.error_message
        == f"Can't parse {base / '2' / 'saved_model.pb'} as binary proto"
    )
    assert manager.resolve(spec("m")).version == 1
    # One attempt and two retries.
    assert manager.load_attempts[(str(base / "2"), "fail")] == 3


async def test_retries_stop_when_the_manager_closes(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base = model_dir("m", versions=(1,))
    manager = managers(
        make_options(
            file_system_poll_wait_seconds=FAST,
            max_num_load_retries=5,
            load_retry_interval_micros=600_000_000,  # ten minutes between attempts
        )
    )
    await manager.start(single_model_config("m", str(base)))
    model_store.install(base, 2, kind="broken")
    await wait_until(lambda: manager.load_attempts[(str(base / "2"), "fail")] == 1)
    assert states(manager, "m")[2] == "LOADING"  # waiting to retry
    await asyncio.wait_for(manager.close(), timeout=20)
    assert states(manager, "m") == {2: "END", 1: "END"}
    assert manager.load_attempts[(str(base / "2"), "fail")] == 1


async def test_a_reload_does_not_wait_for_another_models_retries(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base, other = model_dir("m", versions=(1,)), model_dir("other", versions=(1,))
    manager = managers(
        make_options(
            file_system_poll_wait_seconds=FAST,
            max_num_load_retries=5,
            load_retry_interval_micros=600_000_000,
        )
    )
    config = server_config(entry("m", base))
    await manager.start(config)
    model_store.install(base, 2, kind="broken")
    await wait_until(lambda: manager.load_attempts[(str(base / "2"), "fail")] == 1)
    config.model_config_list.config.append(
        server_config(entry("other", other)).model_config_list.config[0]
    )
    await asyncio.wait_for(manager.reload(config), timeout=WAIT_LIMIT_SECONDS)
    assert manager.resolve(spec("other")).version == 1
    assert states(manager, "m") == {2: "LOADING", 1: "AVAILABLE"}


# -- startup -------------------------------------------------------------------


async def test_startup_failure_names_the_servable_and_its_error(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    good = model_dir("good", versions=(1,))
    bad = model_dir("bad", versions=(4,), kind="broken")
    manager = managers(make_options(max_num_load_retries=1))
    config = server_config(entry("good", good), entry("bad", bad))
    failure = await _start_error(manager, config)
    assert failure.code == grpc.StatusCode.UNKNOWN
    assert failure.message == (
        "1 servable(s) did not become available: {{{name: bad version: 4} due to error: "
        f"DATA_LOSS: Can't parse {bad / '4' / 'saved_model.pb'} as binary proto}}, }}"
    )
    assert states(manager, "bad") == {4: "END"}
    assert states(manager, "good") == {1: "AVAILABLE"}
    assert manager.load_attempts[(str(bad / "4"), "fail")] == 2
    failure = error_of(lambda: manager.resolve(spec("bad")))
    assert failure.message == "Servable not found for request: Latest(bad)"


async def _start_error(
    manager: ModelManager, config: model_server_config_pb2.ModelServerConfig
) -> ServingError:
    with pytest.raises(ServingError) as caught:
        await manager.start(config)
    return caught.value


async def test_startup_without_versions_fails_when_nothing_polls(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    base = model_dir("m", versions=())
    manager = managers(make_options(file_system_poll_wait_seconds=0))
    failure = await _start_error(manager, single_model_config("m", str(base)))
    assert failure.code == grpc.StatusCode.UNKNOWN
    assert failure.message == (
        "1 servable(s) did not become available: {{{name: m} due to error: NOT_FOUND: "
        f"No versions of servable m found under base path {base}. Did you forget to name "
        "your leaf directory as a number (eg. '/1/')?}, }"
    )


async def test_startup_waits_for_a_first_version_while_polling(
    managers: Managers,
    model_dir: ModelDirFactory,
    model_store: ModelStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = model_dir("m", versions=())
    manager = managers(make_options(file_system_poll_wait_seconds=FAST))
    caplog.set_level(logging.WARNING, logger="serving.manager")
    starting = asyncio.create_task(manager.start(single_model_config("m", str(base))))
    await wait_until(lambda: "No versions of servable m found" in caplog.text)
    assert not starting.done()  # upstream waits for the first version too
    model_store.install(base, 1)
    await asyncio.wait_for(starting, timeout=20)
    assert served(manager.resolve(spec("m"))) == 1.0


async def test_a_missing_base_path_changes_nothing_loaded(
    managers: Managers, model_dir: ModelDirFactory, caplog: pytest.LogCaptureFixture
) -> None:
    base = model_dir("m", versions=(1,))
    manager = managers(make_options(file_system_poll_wait_seconds=FAST))
    await manager.start(single_model_config("m", str(base)))
    caplog.set_level(logging.WARNING, logger="serving.manager")
    moved = base.with_name("moved")
    os.rename(base, moved)  # e.g. a volume briefly unmounted
    await wait_until(lambda: f"Could not find base path {base}" in caplog.text)
    assert states(manager, "m") == {1: "AVAILABLE"}
    os.rename(moved, base)


# -- labels ----------------------------------------------------------------------


async def test_startup_labels_need_the_flag(managers: Managers, model_dir: ModelDirFactory) -> None:
    base = model_dir("m", versions=(1, 2))
    config = server_config(entry("m", base, "all {}", {"stable": 1}))
    manager = managers(make_options())
    failure = await _start_error(manager, config)
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.message == (
        "Request to assign label to version 1 of model m, "
        "which is not currently available for inference"
    )
    assert states(manager, "m") == {}  # refused before anything loaded
    failure = error_of(lambda: manager.resolve(spec("m", label="stable")))
    assert failure.code == grpc.StatusCode.UNAVAILABLE


async def test_startup_labels_with_the_flag(managers: Managers, model_dir: ModelDirFactory) -> None:
    base = model_dir("m", versions=(1, 2))
    labels = {"stable": 1, "canary": 2, "future": 5}
    config = server_config(entry("m", base, "specific { versions: 1 versions: 2 }", labels))
    manager = managers(make_options(allow_version_labels_for_unavailable_models=True))
    await manager.start(config)
    assert served(manager.resolve(spec("m", label="stable"))) == 1.0
    assert served(manager.resolve(spec("m", label="canary"))) == 2.0
    # A label on a version that never loads resolves to a Specific request that fails.
    failure = error_of(lambda: manager.resolve(spec("m", label="future")))
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.message == "Servable not found for request: Specific(m, 5)"


async def test_labels_follow_availability_on_reload(
    managers: Managers, model_dir: ModelDirFactory, model_store: ModelStore
) -> None:
    base = model_dir("m", versions=(1, 2))
    both = "specific { versions: 1 versions: 2 }"
    manager = managers(make_options())
    await manager.start(server_config(entry("m", base, both)))
    await manager.reload(server_config(entry("m", base, both, {"stable": 1, "canary": 2})))
    assert manager.resolve(spec("m", label="stable")).version == 1
    assert manager.resolve(spec("m", label="canary")).version == 2

    # Version 3 is on disk and named by the policy, but not loaded yet: refused, and
    # nothing of that config is applied.
    model_store.install(base, 3)
    three = "specific { versions: 1 versions: 2 versions: 3 }"
    with pytest.raises(ServingError) as caught:
        await manager.reload(server_config(entry("m", base, three, {"stable": 1, "canary": 3})))
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == (
        "Request to assign label to version 3 of model m, "
        "which is not currently available for inference"
    )
    assert states(manager, "m") == {2: "AVAILABLE", 1: "AVAILABLE"}
    assert manager.resolve(spec("m", label="canary")).version == 2

    # The documented way: load it first, then move the label.
    await manager.reload(server_config(entry("m", base, three, {"stable": 1, "canary": 2})))
    await manager.reload(server_config(entry("m", base, three, {"stable": 1, "canary": 3})))
    assert served(manager.resolve(spec("m", label="canary"))) == 3.0

    # A reload replaces the label map: a label left out is gone.
    await manager.reload(server_config(entry("m", base, three, {"stable": 2})))
    assert manager.resolve(spec("m", label="stable")).version == 2
    failure = error_of(lambda: manager.resolve(spec("m", label="canary")))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.message == "Unrecognized servable version label: canary"


async def test_the_flag_allows_new_labels_but_not_moving_one_to_an_unavailable_version(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    base = model_dir("m", versions=(1, 2))
    manager = managers(make_options(allow_version_labels_for_unavailable_models=True))
    one = "specific { versions: 1 }"
    await manager.start(server_config(entry("m", base, one, {"stable": 1})))
    # A new label may point at a version that is not available (2 is not loaded).
    await manager.reload(server_config(entry("m", base, one, {"stable": 1, "canary": 2})))
    failure = error_of(lambda: manager.resolve(spec("m", label="canary")))
    assert failure.message == "Servable not found for request: Specific(m, 2)"
    # Keeping it where it is stays allowed.
    await manager.reload(server_config(entry("m", base, one, {"stable": 1, "canary": 2})))
    # Moving an existing label still needs the target to be available (server_core.cc).
    with pytest.raises(ServingError) as caught:
        await manager.reload(server_config(entry("m", base, one, {"stable": 2, "canary": 2})))
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == (
        "Request to assign label to version 2 of model m, "
        "which is not currently available for inference"
    )


# -- reload ------------------------------------------------------------------------


async def test_reload_adds_and_removes_models(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    a, b = model_dir("a", versions=(1,)), model_dir("b", versions=(2,))
    manager = managers(make_options())
    await manager.start(server_config(entry("a", a)))
    await manager.reload(server_config(entry("a", a), entry("b", b)))
    # reload() returns once the new model is AVAILABLE.
    assert served(manager.resolve(spec("b"))) == 2.0
    assert manager.model_names() == ["a", "b"]

    await manager.reload(server_config(entry("b", b)))
    assert manager.model_names() == ["b"]
    failure = error_of(lambda: manager.resolve(spec("a")))
    assert failure.message == "Servable not found for request: Latest(a)"
    await wait_until(lambda: states(manager, "a") == {1: "END"})  # stays listed

    # Added again: loads again, and reload waits for this load, not the old END.
    await manager.reload(server_config(entry("a", a), entry("b", b)))
    assert served(manager.resolve(spec("a"))) == 1.0


async def test_reload_applies_a_changed_policy(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    base = model_dir("m", versions=(1, 2))
    manager = managers(make_options())
    await manager.start(server_config(entry("m", base, "specific { versions: 1 }")))
    await manager.reload(server_config(entry("m", base, "specific { versions: 2 }")))
    assert manager.resolve(spec("m")).version == 2
    await wait_until(lambda: states(manager, "m") == {2: "AVAILABLE", 1: "END"})


async def test_reload_refuses_other_configs_and_invalid_lists(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    base = model_dir("m", versions=(1,))
    manager = managers(make_options())
    await manager.start(server_config(entry("m", base)))
    custom = model_server_config_pb2.ModelServerConfig()
    custom.custom_model_config.Pack(model_server_config_pb2.ModelConfig())
    for config in (model_server_config_pb2.ModelServerConfig(), custom):
        with pytest.raises(ServingError) as caught:
            await manager.reload(config)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.message == (
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported"
        )
    cases = [
        (
            server_config(entry("m", base), entry("m", base)),
            "Illegal to list model m multiple times in config list",
        ),
        (
            server_config(entry("m", Path("models/m"))),
            "Expected model m to have an absolute path or URI; got base_path()=models/m",
        ),
    ]
    for config, message in cases:
        with pytest.raises(ServingError) as caught:
            await manager.reload(config)
        assert (caught.value.code, caught.value.message) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
        )
    assert states(manager, "m") == {1: "AVAILABLE"}  # untouched


async def test_reload_reports_new_models_that_fail(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    good, bad = model_dir("good", versions=(1,)), model_dir("bad", versions=(1,), kind="broken")
    manager = managers(make_options())
    await manager.start(server_config(entry("good", good)))
    with pytest.raises(ServingError) as caught:
        await manager.reload(server_config(entry("good", good), entry("bad", bad)))
    assert caught.value.code == grpc.StatusCode.UNKNOWN
    assert caught.value.message == (
        "1 model(s) did not become available: {{{name: bad version: 1} due to error: "
        f"DATA_LOSS: Can't parse {bad / '1' / 'saved_model.pb'} as binary proto}}, }}"
    )
    assert manager.resolve(spec("good")).version == 1


async def test_concurrent_reloads_run_one_after_the_other(
    managers: Managers, model_dir: ModelDirFactory
) -> None:
    a, b, c = (model_dir(n, versions=(1,)) for n in "abc")
    manager = managers(make_options())
    await manager.start(server_config(entry("a", a)))
    await asyncio.gather(
        manager.reload(server_config(entry("a", a), entry("b", b))),
        manager.reload(server_config(entry("c", c))),
    )
    assert manager.model_names() == ["c"]
    assert manager.resolve(spec("c")).version == 1
    await wait_until(
        lambda: states(manager, "a") == {1: "END"} and states(manager, "b") == {1: "END"}
    )


# -- the config file ------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)  # a poll never reads half a file


async def test_config_file_polling_applies_changes(
    managers: Managers, model_dir: ModelDirFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = model_dir("a", versions=(1,)), model_dir("b", versions=(3,))
    path = tmp_path / "models.config"
    _write_atomically(path, f"model_config_list {{ {entry('a', a)} }}")
    manager = managers(
        make_options(model_config_file=str(path), model_config_file_poll_wait_seconds=FAST)
    )
    caplog.set_level(logging.ERROR, logger="serving.manager")
    await manager.start(read_model_server_config(str(path)))

    _write_atomically(path, f"model_config_list {{ {entry('a', a)} {entry('b', b)} }}")
    await wait_until(lambda: states(manager, "b") == {3: "AVAILABLE"})
    assert served(manager.resolve(spec("b"))) == 3.0

    # A broken file is logged and ignored; what is loaded stays.
    _write_atomically(path, "model_config_list { oops }")
    await wait_until(lambda: "Failed to read ModelServerConfig file" in caplog.text)
    assert manager.model_names() == ["a", "b"]

    _write_atomically(path, f"model_config_list {{ {entry('b', b)} }}")
    await wait_until(lambda: states(manager, "a") == {1: "END"})
    assert manager.model_names() == ["b"]


async def test_close_unloads_everything(managers: Managers, model_dir: ModelDirFactory) -> None:
    base = model_dir("m", versions=(1, 2))
    manager = managers(make_options(file_system_poll_wait_seconds=FAST))
    await manager.start(server_config(entry("m", base, "all {}")))
    await manager.close()
    assert states(manager, "m") == {2: "END", 1: "END"}
    failure = error_of(lambda: manager.resolve(spec("m")))
    assert failure.code == grpc.StatusCode.NOT_FOUND
