"""Waiting for a version to load: AVAILABLE, a fresh failure, a stale failure, a timeout."""

from __future__ import annotations

import grpc
import pytest

from bridge.ops import labels
from bridge.ops.errors import CommandError
from bridge.ops.labels import wait_until_available
from bridge.serving.model_service import VersionStatus


def _status(
    state: str, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = ""
) -> VersionStatus:
    return VersionStatus(3, state, code, message)


class _Script:
    """GetModelStatus answers for version 3, one per poll (the last one repeats)."""

    target = "tfs:8500"

    def __init__(self, *answers: VersionStatus | None) -> None:
        self.answers = list(answers)
        self.polls = 0

    async def status(self, model: str) -> list[VersionStatus]:
        answer = self.answers[min(self.polls, len(self.answers) - 1)]
        self.polls += 1
        old = VersionStatus(1, "AVAILABLE", grpc.StatusCode.OK, "")
        return [old] if answer is None else [answer, old]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels, "POLL_INTERVAL_S", 0.001)


async def test_polls_until_available() -> None:
    script = _Script(None, _status("START"), _status("LOADING"), _status("AVAILABLE"))
    await wait_until_available(script, "fraud", 3, 5.0, before=None)
    assert script.polls == 4


async def test_a_fresh_failure_is_reported_with_the_servers_message() -> None:
    failed = _status("END", grpc.StatusCode.UNKNOWN, "Could not load the SavedModel")
    script = _Script(_status("LOADING"), failed)
    with pytest.raises(CommandError, match=r"version 3 of model fraud failed to load: UNKNOWN: "):
        await wait_until_available(script, "fraud", 3, 5.0, before=None)


async def test_an_older_failure_is_not_taken_for_this_attempts() -> None:
    stale = _status("END", grpc.StatusCode.UNKNOWN, "from an earlier attempt")
    script = _Script(stale, stale, _status("LOADING"), _status("AVAILABLE"))
    await wait_until_available(script, "fraud", 3, 5.0, before=stale)
    assert script.polls == 4


async def test_an_older_failure_that_never_changes_times_out_with_its_message() -> None:
    stale = _status("END", grpc.StatusCode.UNKNOWN, "from an earlier attempt")
    with pytest.raises(CommandError, match=r"not AVAILABLE after 0.05 s \(it is END with UNKNOWN"):
        await wait_until_available(_Script(stale), "fraud", 3, 0.05, before=stale)


async def test_a_version_the_server_never_starts_times_out() -> None:
    with pytest.raises(CommandError, match=r"not AVAILABLE after 0.05 s \(it is not known"):
        await wait_until_available(_Script(None), "fraud", 3, 0.05, before=None)
