"""Dead letters read back for ``bridge failures replay``: which to replay, and as what.

No I/O: ``bridge.ops.replay`` reads and writes Kafka, this decides.

A failure record (``bridge.kafka.records``) is the input as it came (key, value,
headers) with ``__connect.errors.*`` and ``__bridge.errors.*`` headers after them.
Its replay is that input again: the same key, the byte-identical value, the
input's own headers without those two families, and ``__bridge.replayed``, how
many times the input has now been replayed (1 on the first replay). The mark is
not an error header, so when a replayed input fails again its dead letter keeps
it, and the next replay writes 2: a loop shows as a growing count.

Selection, by the failure record's own timestamp (when the bridge wrote the dead
letter, not when the input was produced):

- a reason not asked for (``--reason``) or a record older than ``--since`` is
  passed over: committed past for this run's group, never replayed by it;
- a record newer than ``--until`` ends its partition's run: it and what follows
  stay for a later run;
- ``undecodable_batch`` and ``output_refused`` dead letters hold no input value
  (nothing could be read, or the broker refused the output with it), and a record
  without ``__connect.errors.topic`` has nowhere to go without ``--to``: they are
  reported, counted and committed past.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from bridge.errors import BridgeError, UndecodableBatchError, UnwritableOutputError
from bridge.kafka.records import BRIDGE, CONNECT
from bridge.ops.output import table

REPLAY_MARK = "__bridge.replayed"
ERROR_PREFIXES = (CONNECT, BRIDGE)
NO_VALUE_REASONS = frozenset({UndecodableBatchError.reason, UnwritableOutputError.reason})
UNKNOWN_REASON = "(none)"  # a record on the failures topic without a reason header
NO_TOPIC = "(none)"
REPORTED = 10  # unreplayable records named one by one in the summary; the rest counted

Headers = Sequence[tuple[str, bytes]]


def known_reasons() -> frozenset[str]:
    """Every reason a failure record can carry: the error tree's (``bridge.errors``)."""
    found: set[str] = set()
    pending: list[type[BridgeError]] = [BridgeError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not BridgeError and "reason" in cls.__dict__:
            found.add(cls.reason)
    return frozenset(found)


def _last(headers: Headers, name: str) -> bytes | None:
    values = [value for key, value in headers if key == name]
    return values[-1] if values else None


def replays_so_far(headers: Headers) -> int:
    """The input's replay count (0: never replayed, or a mark that is not a count)."""
    mark = _last(headers, REPLAY_MARK)
    try:
        return max(int(mark), 0) if mark is not None else 0
    except ValueError:
        return 0


def input_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """The input's own headers, in order: without the error headers and the old mark."""
    return [
        (key, value)
        for key, value in headers
        if not key.startswith(ERROR_PREFIXES) and key != REPLAY_MARK
    ]


def replay_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """The headers a replay is written with: the input's, then the mark, counted up."""
    return [*input_headers(headers), (REPLAY_MARK, str(replays_so_far(headers) + 1).encode())]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record read from the failures topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        value = _last(self.headers, name)
        return value.decode(errors="replace") if value is not None else None

    @property
    def reason(self) -> str:
        return self.header(BRIDGE + "reason") or UNKNOWN_REASON

    @property
    def source_topic(self) -> str | None:
        return self.header(CONNECT + "topic") or None

    @property
    def position(self) -> str:
        return f"partition {self.partition} offset {self.offset}"


class Verdict(StrEnum):
    REPLAY = "replay"
    PASSED_OVER = "passed over"  # not asked for: committed past, not replayed
    UNREPLAYABLE = "not replayable"  # asked for, but nothing or nowhere to replay
    LATER = "later"  # past --until: the partition's run ends before it
    LIMIT = "limit"  # one replay more than --limit: the whole run ends before it


@dataclass(frozen=True, slots=True)
class Selection:
    reasons: frozenset[str] = frozenset()  # empty: every reason
    since_ms: int | None = None
    until_ms: int | None = None
    to: str | None = None  # None: each record's own source topic

    def destination(self, letter: DeadLetter) -> str | None:
        return self.to or letter.source_topic

    def verdict(self, letter: DeadLetter) -> Verdict:
        if self.until_ms is not None and letter.timestamp_ms > self.until_ms:
            return Verdict.LATER
        if self.reasons and letter.reason not in self.reasons:
            return Verdict.PASSED_OVER
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return Verdict.PASSED_OVER
        if letter.reason in NO_VALUE_REASONS or self.destination(letter) is None:
            return Verdict.UNREPLAYABLE
        return Verdict.REPLAY

    def why_not(self, letter: DeadLetter) -> str:
        """Why an UNREPLAYABLE record is, for the summary."""
        if letter.reason in NO_VALUE_REASONS:
            return f"{letter.reason}: the dead letter holds no input value"
        return f"no {CONNECT}topic header (give --to)"


def replay_group(base: str, reasons: Iterable[str]) -> str:
    """The group a run commits to: one per set of reasons asked for.

    A record passed over because of its reason is committed past only for this
    group, so a later run for another reason still finds it.
    """
    chosen = sorted(set(reasons))
    return f"{base}.replay" + ("." + "+".join(chosen) if chosen else "")


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now_ms: int) -> int:
    """``2h`` (that long before ``now_ms``) or ISO-8601 (UTC without an offset), in ms."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        return now_ms - round(float(relative[1]) * _UNIT_S[relative[2]] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a time (ISO-8601, e.g. 2026-12-02T05:00:00Z) "
            "nor a duration before now (e.g. 30m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass
class Tally:
    """What a run read, by reason, destination topic and verdict."""

    rows: Counter[tuple[str, str, Verdict]] = field(default_factory=Counter)
    unreplayable: list[str] = field(default_factory=list)  # the first REPORTED, described

    def add(self, letter: DeadLetter, verdict: Verdict, selection: Selection) -> None:
        topic = selection.destination(letter) or NO_TOPIC
        self.rows[(letter.reason, topic, verdict)] += 1
        if verdict is Verdict.UNREPLAYABLE and len(self.unreplayable) < REPORTED:
            self.unreplayable.append(f"{letter.position}: {selection.why_not(letter)}")

    def judge(self, letter: DeadLetter, selection: Selection, limit: int | None) -> Verdict:
        """The record's verdict, counted unless it ends the run (LATER, LIMIT)."""
        verdict = selection.verdict(letter)
        if verdict is Verdict.REPLAY and limit is not None and self.count(verdict) >= limit:
            return Verdict.LIMIT
        if verdict is not Verdict.LATER:
            self.add(letter, verdict, selection)
        return verdict

    def count(self, verdict: Verdict) -> int:
        return sum(n for (_, _, v), n in self.rows.items() if v is verdict)

    @property
    def read(self) -> int:
        return sum(self.rows.values())

    def render(self, dry_run: bool) -> str:
        """One row per reason and destination topic."""
        verdicts = (Verdict.REPLAY, Verdict.PASSED_OVER, Verdict.UNREPLAYABLE)
        pairs = sorted({(reason, topic) for reason, topic, _ in self.rows})
        header = ["reason", "to topic", "would replay" if dry_run else "replayed", *verdicts[1:]]
        body = [
            [reason, topic, *(self.rows[(reason, topic, v)] for v in verdicts)]
            for reason, topic in pairs
        ]
        return table(header, body, align="llrrr", rule=True)
