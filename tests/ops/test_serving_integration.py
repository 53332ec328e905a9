"""``bridge serving status|label`` against a real ``python -m serving`` process."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bridge.domain import Target
from bridge.errors import ModelCallError
from bridge.ops import commands
from bridge.ops.labels import LabelMove, move_label
from bridge.ops.models_config import find_model, labels_of, parse_models_config, specific_versions
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.grpc_client import GrpcModelClient
from tests.ops.servers import Served, fake_models_config, model_server

pytestmark = pytest.mark.integration

EVENT = {"time": 1.0, "amount": 42.0, "pca": [0.1] * 28}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with model_server(tmp_path) as running:
        yield running


def run(served: Served, *argv: str) -> int:
    common = ["--models-config", str(served.config), "--grpc-target", served.server.grpc_target]
    return commands.main([*argv, *common])


def label_version(served: Served, label: str) -> int:
    """What REST resolves the label to (the metadata answer names the version)."""
    response = httpx.get(f"{served.server.rest_url}/v1/models/fraud/labels/{label}/metadata")
    response.raise_for_status()
    return int(response.json()["model_spec"]["version"])


async def states(served: Served) -> dict[int, str]:
    client = GrpcModelClient(served.server.grpc_target, 10, 4 * 1024 * 1024)
    try:
        return {s.version: s.state for s in await client.model_service.status("fraud")}
    finally:
        await client.aclose()


def config_file(served: Served) -> tuple[dict[str, int], list[int] | None]:
    fraud = find_model(parse_models_config(served.config.read_text()), "fraud")
    return labels_of(fraud), specific_versions(fraud)


def test_status_lists_versions_highest_first_with_their_labels(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served, "serving", "status") == 0
    out = capsys.readouterr().out
    assert f"fraud  base_path {served.fraud}  policy specific {{1, 2}}  on disk 1, 2, 3" in out
    table = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert table == [
        ["VERSION", "STATE", "LABELS", "ERROR"],
        ["2", "AVAILABLE", "canary"],
        ["1", "AVAILABLE", "stable"],
    ]

    assert run(served, "serving", "status", "fraud", "--json") == 0
    document = orjson.loads(capsys.readouterr().out)
    (fraud,) = document["models"]
    assert fraud["labels"] == {"canary": 2, "stable": 1}
    assert [(v["version"], v["state"], v["labels"]) for v in fraud["versions"]] == [
        (2, "AVAILABLE", ["canary"]),
        (1, "AVAILABLE", ["stable"]),
    ]


def test_status_of_an_unknown_model_says_so_and_fails(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served, "serving", "status", "churn") == 1
    out = capsys.readouterr().out
    assert "not in " in out and "NOT_FOUND: Could not find any versions of model churn" in out


def test_moving_stable_from_1_to_2(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    original = served.config.read_text()
    assert label_version(served, "stable") == 1

    assert run(served, "serving", "label", "fraud", "stable", "2") == 0
    out = capsys.readouterr().out
    assert "label stable moved from version 1 to version 2" in out
    assert "version 1 has no label and stays loaded" in out

    assert label_version(served, "stable") == 2
    assert asyncio.run(states(served)) == {2: "AVAILABLE", 1: "AVAILABLE"}
    assert config_file(served) == ({"canary": 2, "stable": 2}, [1, 2])
    text = served.config.read_text()
    header = original[: original.index("model_config_list")]
    assert text.startswith(header) and text.endswith("}\n")
    assert not list(served.config.parent.glob(".models.config.*"))  # no temporary left

    assert run(served, "serving", "status") == 0
    assert "2        AVAILABLE  canary,stable" in capsys.readouterr().out


def test_a_version_missing_on_disk_is_refused_and_the_file_is_unchanged(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    before = served.config.read_bytes()
    assert run(served, "serving", "label", "fraud", "stable", "9") == 1
    assert (
        f"version 9 of model fraud does not exist on disk under {served.fraud}"
        in capsys.readouterr().err
    )
    assert served.config.read_bytes() == before
    assert label_version(served, "stable") == 1


def test_a_version_on_disk_but_not_in_the_policy_is_loaded_first(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 3 not in asyncio.run(states(served))
    assert run(served, "serving", "label", "fraud", "stable", "3") == 0
    out = capsys.readouterr().out
    assert "step 1/2: loading version 3 of fraud (policy specific {1, 2, 3})" in out
    assert out.index("version 3 is AVAILABLE") < out.index("step 2/2: pointing stable at")
    assert asyncio.run(states(served)) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}
    assert label_version(served, "stable") == 3
    assert label_version(served, "canary") == 2
    assert config_file(served) == ({"canary": 2, "stable": 3}, [1, 2, 3])


def test_a_version_that_fails_to_load_is_refused_and_the_config_restored(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = served.fraud / "4"
    shutil.copytree(served.fraud / "2", broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    before = served.config.read_bytes()

    assert run(served, "serving", "label", "fraud", "stable", "4") == 1
    err = capsys.readouterr().err
    assert "version 4 of model fraud failed to load: " in err
    assert "restored the previous config on the server" in err
    assert served.config.read_bytes() == before
    assert label_version(served, "stable") == 1
    # The server runs the file's config again: the next move writes a policy without 4.
    assert run(served, "serving", "label", "fraud", "canary", "1") == 0
    assert config_file(served) == ({"canary": 1, "stable": 1}, [1, 2])


def test_unload_unlabelled_drops_versions_no_label_points_at(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(served, "serving", "label", "fraud", "stable", "2", "--unload-unlabelled") == 0
    assert "versions loaded: 2 (unloaded: 1)" in capsys.readouterr().out
    assert config_file(served) == ({"canary": 2, "stable": 2}, [2])
    assert asyncio.run(states(served)) == {2: "AVAILABLE", 1: "END"}


async def test_an_interrupted_move_puts_the_previous_config_back(served: Served) -> None:
    before = served.config.read_bytes()
    move = LabelMove("fraud", "stable", 3, served.config, served.server.grpc_target, 30)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if "is AVAILABLE" in line:  # step 1 is on the server: Ctrl-C before step 2
            task.cancel()

    task = asyncio.create_task(move_label(move, say))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "interrupted: sending the previous config back to the server" in said
    assert said[-1].startswith("restored the previous config on the server")
    assert served.config.read_bytes() == before
    assert label_version(served, "stable") == 1
    deadline = time.monotonic() + 30
    while (await states(served)).get(3) == "AVAILABLE":  # the file's policy has no 3
        assert time.monotonic() < deadline, "version 3 should unload after the restore"
        await asyncio.sleep(0.2)


async def test_requests_to_the_label_never_fail_while_it_moves(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    client = GrpcModelClient(served.server.grpc_target, 10.0, 4 * 1024 * 1024)
    target = Target("fraud", label="stable")
    signature = await client.get_signature(target)
    instance = InstanceBuilder(signature).build(EVENT)
    outcomes: Counter[str] = Counter()
    versions: Counter[int | None] = Counter()
    answered = asyncio.Event()
    done = asyncio.Event()

    async def predict_loop() -> None:
        while not done.is_set():
            try:
                prediction = await client.predict(target, signature, [instance])
            except ModelCallError as exc:
                outcomes[f"{exc.status}: {exc.message}"] += 1
            else:
                outcomes["ok"] += 1
                versions[prediction.version] += 1
            answered.set()

    async def until_ok(count: int) -> None:
        async with asyncio.timeout(60):
            while outcomes["ok"] < count:
                answered.clear()
                await answered.wait()

    loops = [asyncio.create_task(predict_loop()) for _ in range(4)]
    try:
        await until_ok(20)  # the loop runs before the move starts
        before = outcomes["ok"]
        started = time.monotonic()
        code = await asyncio.to_thread(run, served, "serving", "label", "fraud", "stable", "3")
        moved_in = time.monotonic() - started
        during = outcomes["ok"] - before
        await until_ok(outcomes["ok"] + 20)  # and after it ends
    finally:
        done.set()
        await asyncio.gather(*loops)
        await client.aclose()
    assert code == 0, capsys.readouterr().err
    errors = {key: n for key, n in outcomes.items() if key != "ok"}
    assert errors == {}, f"{sum(errors.values())} failed requests during a {moved_in:.1f} s move"
    assert during > 0, "no request ran while the label moved"
    assert set(versions) == {1, 3}  # served by 1 before the move and by 3 after it


def test_an_unreachable_server_fails_the_label_move_and_leaves_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fake_models_config(tmp_path)
    before = path.read_text()
    argv = ["serving", "label", "fraud", "stable", "2", "--models-config", str(path)]
    assert commands.main([*argv, "--grpc-target", "127.0.0.1:1", "--timeout", "2"]) == 1
    assert "cannot reach the model server at 127.0.0.1:1" in capsys.readouterr().err
    assert path.read_text() == before
