"""``bridge failures replay``'s choices without a broker: headers, selection, the mark."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import pytest

from bridge.domain import Failure, Target
from bridge.errors import BridgeError, MissingInputError, ModelServerError, UndecodableBatchError
from bridge.kafka.records import BRIDGE, CONNECT, RecordBuilder
from bridge.ops import commands
from bridge.ops.dead_letters import (
    REPLAY_MARK,
    DeadLetter,
    Selection,
    Tally,
    Verdict,
    input_headers,
    known_reasons,
    parse_when,
    replay_group,
    replay_headers,
)
from bridge.ops.errors import UsageError
from bridge.ops.failures import selection_from_args

INPUT_HEADERS = (("trace-id", b"t-1"), ("bin", bytes([0, 255])), ("trace-id", b"t-2"))
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Source:
    topic: str = "payments"
    partition: int = 2
    offset: int = 41
    timestamp: int | None = 1_000
    key: bytes | None = b"card-7"
    value: bytes | None = b'{"amount": 1}'
    headers: tuple[tuple[str, bytes], ...] = INPUT_HEADERS


def dead_letter(
    error: BridgeError = MissingInputError("no pca"),  # noqa: B008 - read only
    source: Source = Source(),
    timestamp_ms: int = 5 * HOUR_MS,
    keep_value: bool = True,
) -> DeadLetter:
    """What the bridge's own RecordBuilder writes for ``source``, read back."""
    builder = RecordBuilder("results", "failures", {"results": 1, "failures": 1}, "grpc")
    failure = Failure(error, attempts=1, first_attempt_ms=1, last_attempt_ms=2)
    record = builder.failure(
        source, failure, "stable", Target("fraud", label="stable"), keep_value=keep_value
    )
    return DeadLetter(0, 9, timestamp_ms, record.key, record.value, tuple(record.headers))


def test_a_replay_has_the_inputs_headers_in_order_and_one_mark() -> None:
    letter = dead_letter()
    assert any(k.startswith(CONNECT) for k, _ in letter.headers)
    assert any(k.startswith(BRIDGE) for k, _ in letter.headers)
    assert input_headers(letter.headers) == list(INPUT_HEADERS)
    assert replay_headers(letter.headers) == [*INPUT_HEADERS, (REPLAY_MARK, b"1")]
    assert (letter.key, letter.value) == (Source.key, Source.value)


def test_the_mark_counts_replays_through_another_failure() -> None:
    once = Source(headers=tuple(replay_headers(dead_letter().headers)))
    twice = replay_headers(dead_letter(source=once).headers)
    assert twice == [*INPUT_HEADERS, (REPLAY_MARK, b"2")]
    garbled = [*INPUT_HEADERS, (REPLAY_MARK, b"many")]
    assert replay_headers(garbled)[-1] == (REPLAY_MARK, b"1")


def test_selection_by_reason_and_time() -> None:
    missing = dead_letter(timestamp_ms=5 * HOUR_MS)
    model = dead_letter(ModelServerError("boom"), timestamp_ms=5 * HOUR_MS)
    by_reason = Selection(frozenset({"missing_input"}))
    assert by_reason.verdict(missing) is Verdict.REPLAY
    assert by_reason.verdict(model) is Verdict.PASSED_OVER
    assert Selection().verdict(model) is Verdict.REPLAY
    window = Selection(since_ms=4 * HOUR_MS, until_ms=6 * HOUR_MS)
    assert window.verdict(missing) is Verdict.REPLAY
    assert window.verdict(replace(missing, timestamp_ms=3 * HOUR_MS)) is Verdict.PASSED_OVER
    assert window.verdict(replace(missing, timestamp_ms=7 * HOUR_MS)) is Verdict.LATER
    assert window.verdict(replace(missing, timestamp_ms=6 * HOUR_MS)) is Verdict.REPLAY


def test_dead_letters_without_a_value_or_a_topic_are_not_replayable() -> None:
    undecodable = dead_letter(UndecodableBatchError("crc"))
    refused = dead_letter(keep_value=False)
    refused = replace(
        refused,
        headers=(*input_headers(refused.headers), (BRIDGE + "reason", b"output_refused")),
    )
    assert Selection().verdict(undecodable) is Verdict.UNREPLAYABLE
    assert Selection().verdict(refused) is Verdict.UNREPLAYABLE
    assert "holds no input value" in Selection().why_not(undecodable)
    nowhere = replace(dead_letter(), headers=INPUT_HEADERS)
    assert Selection().verdict(nowhere) is Verdict.UNREPLAYABLE
    assert Selection(to="retry").verdict(nowhere) is Verdict.REPLAY
    assert Selection().destination(dead_letter()) == "payments"
    assert Selection(to="retry").destination(dead_letter()) == "retry"


def test_the_limit_ends_the_run_at_the_next_replay_and_the_tally_counts() -> None:
    tally, selection = Tally(), Selection(frozenset({"missing_input"}))
    missing, model = dead_letter(), dead_letter(ModelServerError("boom"))
    verdicts = [tally.judge(letter, selection, 2) for letter in (missing, model, missing)]
    assert verdicts == [Verdict.REPLAY, Verdict.PASSED_OVER, Verdict.REPLAY]
    assert tally.judge(model, selection, 2) is Verdict.PASSED_OVER  # still passed over
    assert tally.judge(missing, selection, 2) is Verdict.LIMIT
    assert (tally.count(Verdict.REPLAY), tally.count(Verdict.PASSED_OVER), tally.read) == (2, 2, 4)
    rows = tally.render(dry_run=True).splitlines()
    assert rows[0].split() == [
        "reason",
        "to",
        "topic",
        "would",
        "replay",
        "passed",
        "over",
        "not",
        "replayable",
    ]
    assert rows[2].split() == ["missing_input", "payments", "2", "0", "0"]
    assert rows[3].split() == ["model_error", "payments", "0", "2", "0"]


def test_times_are_iso_or_before_now() -> None:
    now = 10 * HOUR_MS
    assert parse_when("2h", now) == 8 * HOUR_MS
    assert parse_when("30m", now) == now - HOUR_MS // 2
    assert parse_when("1970-01-01T01:00:00Z", now) == HOUR_MS
    assert parse_when("1970-01-01T01:00:00", now) == HOUR_MS  # no offset: UTC
    assert parse_when("1970-01-01T02:00:00+01:00", now) == HOUR_MS
    with pytest.raises(ValueError, match="neither a time"):
        parse_when("yesterday", now)


def test_each_set_of_reasons_has_its_own_group() -> None:
    assert replay_group("scorers", []) == "scorers.replay"
    assert replay_group("scorers", ["wrong_type", "missing_input"]) == (
        "scorers.replay.missing_input+wrong_type"
    )
    assert {"missing_input", "output_refused", "undecodable_batch"} <= known_reasons()
    assert "error" not in known_reasons()


def args(*argv: str) -> argparse.Namespace:
    parsed = commands.build_parser().parse_args(["failures", "replay", *argv])
    assert parsed.handler is commands.run_failures_replay
    return parsed


def test_flags_become_a_selection_and_bad_ones_are_usage_errors() -> None:
    chosen = selection_from_args(
        args("--reason", "missing_input", "--reason", "wrong_type", "--since", "2h", "--to", "T"),
        10 * HOUR_MS,
    )
    assert chosen == Selection(frozenset({"missing_input", "wrong_type"}), 8 * HOUR_MS, None, "T")
    with pytest.raises(UsageError, match="no failure has reason mising_input"):
        selection_from_args(args("--reason", "mising_input"), 0)
    with pytest.raises(UsageError, match="--since is later than --until"):
        selection_from_args(args("--since", "1h", "--until", "2h"), 10 * HOUR_MS)
    with pytest.raises(UsageError, match="--until: 'soon'"):
        selection_from_args(args("--until", "soon"), 0)


def test_missing_settings_exit_2_before_any_connection(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["failures", "replay", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "set BRIDGE_TOPICS__FAILURES or pass --topic" in capsys.readouterr().err
    assert commands.main(["failures", "replay", "--topic", "dlq"]) == 2
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in capsys.readouterr().err
