"""Moving a label under load fails nothing: ``stable`` 1 -> 2 while events stream.

The bridge targets ``stable``. Mid-stream the label moves the documented way,
with ``bridge.ops.labels.move_label`` (HandleReloadConfigRequest, two steps: a
config that loads the new version, then one that points the label at it):

- ``both-loaded``: the server already loads 1 and 2 (``stable`` -> 1, ``canary``
  -> 2, the sidecar's models.config), so only the second step is sent;
- ``load-label-unload``: the server loads only 1; the move loads 2, points
  ``stable`` at it, then unloads 1 (``--unload-unlabelled``) while requests that
  resolved ``stable`` to 1 may still be in flight.

Events served before the move come from version 1, events sent after it from
version 2, and not one event fails.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridge.ops.labels import LabelMove, move_label
from tests.integration.kafka_io import make_topics
from tests.integration.procs import Bridges
from tests.versions.conftest import StartServer
from tests.versions.switching import (
    MODEL,
    Stream,
    assert_no_failures,
    assert_server_never_down,
    finish,
    model_config,
    outputs_for,
    read_models_config,
    records_for,
    version_of,
    wait_for_outputs,
    wait_for_states,
    wait_until_flowing,
    write_models_config,
)
from tools.harness.processes import bridge_env

pytestmark = pytest.mark.integration

RATE_PER_S = 50.0

# (versions loaded, labels, unload unlabelled, labels after, version states after)
CASES = [
    pytest.param(
        [1, 2],
        {"stable": 1, "canary": 2},
        False,
        {"stable": 2, "canary": 2},
        {1: "AVAILABLE", 2: "AVAILABLE"},
        id="both-loaded",
    ),
    pytest.param(
        [1], {"stable": 1}, True, {"stable": 2}, {1: "END", 2: "AVAILABLE"}, id="load-label-unload"
    ),
]


@pytest.mark.parametrize(("versions", "labels", "unload", "labels_after", "states_after"), CASES)
async def test_label_move_under_load_fails_no_event(
    kafka_bootstrap: str,
    topic_prefix: str,
    fraud_models: Path,
    start_server: StartServer,
    bridges: Bridges,
    tmp_path: Path,
    versions: list[int],
    labels: dict[str, int],
    unload: bool,
    labels_after: dict[str, int],
    states_after: dict[int, str],
) -> None:
    models_config = write_models_config(
        tmp_path / "models.config", model_config(fraud_models, versions, labels)
    )
    server = await asyncio.to_thread(
        start_server,
        [f"--model_config_file={models_config}", "--allow_version_labels_for_unavailable_models"],
    )
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=3, results=2, failures=1)
    env = bridge_env(
        kafka_bootstrap,
        topics.names,
        server,
        group=topics.group,
        BRIDGE_MODEL__LABEL="stable",
        BRIDGE_BATCH__MAX_SIZE="8",
        BRIDGE_BATCH__MAX_WAIT_MS="5",
    )
    bridge = await bridges.start_assigned(env)

    async with (
        outputs_for(kafka_bootstrap, topics) as outputs,
        Stream(kafka_bootstrap, topics.input, RATE_PER_S) as stream,
    ):
        before = await wait_until_flowing(outputs, stream, bridge, 50, "before the move")
        await asyncio.sleep(1.0)  # the stream keeps running into the move

        said: list[str] = []
        move = LabelMove(
            MODEL, "stable", 2, models_config, server.grpc_target, 30.0, unload_unlabelled=unload
        )
        await move_label(move, said.append)
        moved = time.monotonic()
        print("\n".join(said))
        states = await wait_for_states(server, states_after)

        await wait_for_outputs(
            outputs,
            stream,
            bridge,
            lambda o: any(version_of(r) == 2 for r in o.results),
            "results served by version 2 after the move",
        )
        await asyncio.sleep(2.0)  # the stream keeps running after the move
        sent, _ = await finish(stream, outputs, bridge)

    assert_no_failures(outputs, bridge)
    assert_server_never_down(bridge)
    assert states == states_after, states
    after = stream.after(moved)
    assert len(before) >= 50 and len(after) >= 50, (len(before), len(after))

    versions_before = {version_of(r) for r in records_for(outputs, before)}
    assert versions_before == {1}, f"before the move stable served {versions_before}"
    versions_after = {version_of(r) for r in records_for(outputs, after)}
    assert versions_after == {2}, f"events sent after the move were served by {versions_after}"
    every = {version_of(r) for r in records_for(outputs, sent)}
    assert every == {1, 2}, every
    for record in records_for(outputs, sent):
        assert record.body is not None
        assert record.body["model"]["route"] == "stable", record.body["model"]
        assert record.body["model"]["target"] == "fraud@stable", record.body["model"]

    # The file the server was started with now says where the label points.
    final = dict(read_models_config(models_config).model_config_list.config[0].version_labels)
    assert final == labels_after, models_config.read_text()
