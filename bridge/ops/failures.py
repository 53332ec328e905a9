"""``bridge failures replay``: its flags and help, and a run built from settings + flags.

``bridge.ops.commands`` registers it (``add_failures``) and runs ``replay_from_args``
with the operator commands' settings; the reading and writing is ``bridge.ops.replay``'s,
the choosing ``bridge.ops.dead_letters``'.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from bridge.ops.dead_letters import Selection, known_reasons, parse_when, replay_group
from bridge.ops.errors import CommandError, UsageError
from bridge.ops.flags import add_config, add_timeout, positive_int
from bridge.settings import OpsSettings

DESCRIPTION = """\
Write the inputs on the failures topic (BRIDGE_TOPICS__FAILURES) again, as they came:
the same key, the byte-identical value, the input's own headers without the
__connect.errors.* and __bridge.errors.* ones, plus __bridge.replayed, the number of
times the input has been replayed (1, then 2 if its replay failed and is replayed in
turn: a loop shows as a growing count). Each goes to --to, or to the topic it came
from (its __connect.errors.topic header); the producer picks the partition by key."""

EPILOG = """\
what is replayed:
  Records are chosen by --reason and by the failure record's timestamp (when the
  bridge wrote the dead letter). --since passes over older ones; the first record
  newer than --until ends its partition's run (it stays for a later run).
  undecodable_batch and output_refused dead letters hold no input value: they are
  listed, counted and skipped, as is a record without __connect.errors.topic when
  no --to is given.

at least once, with a group of its own:
  The run commits to its own consumer group: BRIDGE_KAFKA__GROUP_ID + ".replay",
  or + ".replay.REASON[+REASON...]" with --reason (--group names another). It
  starts where that group stopped and commits past a fetch's records only once
  every replay among them is acknowledged (acks=all): run it again and it replays
  nothing already replayed. Records passed over (another reason, before --since)
  are committed past for that group only, so a run for another reason still finds
  them; a run without --reason after one with it replays those again. It reads to
  the end offsets taken at start and ends. Run one replay per group at a time.

exit codes: 0 done (including records listed as not replayable), 1 failed (Kafka:
what was acknowledged and committed stays done), 2 usage or settings, 130 interrupted.

example:
  bridge failures replay --reason missing_input --since 2h --dry-run
  bridge failures replay --reason missing_input --since 2h --to payments-retry"""

Say = Callable[[str], None]


def add_failures(subparsers: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    """Register ``failures replay`` (``handler`` runs it)."""
    failures = subparsers.add_parser(
        "failures",
        help="the dead letters on the failures topic (replay)",
        description="Operate on the failures (dead-letter) topic.",
    )
    commands = failures.add_subparsers(dest="failures_command", required=True)
    replay = commands.add_parser(
        "replay",
        help="write failed inputs again, as they came (at least once)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "--to", metavar="TOPIC", help="where to write (default: each record's source topic)"
    )
    replay.add_argument(
        "--reason",
        action="append",
        metavar="R",
        help="only failures with this reason (repeatable; default: every reason)",
    )
    replay.add_argument(
        "--since", metavar="WHEN", help="failed at or after WHEN: ISO-8601 (UTC if no offset) or 2h"
    )
    replay.add_argument("--until", metavar="WHEN", help="failed at or before WHEN (as --since)")
    replay.add_argument("--limit", type=positive_int, metavar="N", help="replay at most N")
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed; write nothing"
    )
    replay.add_argument(
        "--group",
        help="the consumer group to commit to (default: BRIDGE_KAFKA__GROUP_ID.replay[.REASONS])",
    )
    replay.add_argument("--topic", help="the failures topic (default: BRIDGE_TOPICS__FAILURES)")
    replay.add_argument(
        "--bootstrap-servers",
        metavar="H:P[,H:P]",
        help="Kafka bootstrap servers (default: BRIDGE_KAFKA__BOOTSTRAP_SERVERS)",
    )
    add_config(replay)
    add_timeout(replay, "deadline of each Kafka step (start, a fetch, its acks, a commit)")
    replay.set_defaults(handler=handler)


def _when(text: str | None, flag: str, now_ms: int) -> int | None:
    if text is None:
        return None
    try:
        return parse_when(text, now_ms)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def selection_from_args(args: argparse.Namespace, now_ms: int) -> Selection:
    reasons = frozenset(args.reason or ())
    unknown = sorted(reasons - known_reasons())
    if unknown:
        raise UsageError(
            f"no failure has reason {', '.join(unknown)}; the reasons are "
            + ", ".join(sorted(known_reasons()))
        )
    since, until = _when(args.since, "--since", now_ms), _when(args.until, "--until", now_ms)
    if since is not None and until is not None and since > until:
        raise UsageError("--since is later than --until: nothing could be chosen")
    return Selection(reasons, since, until, args.to)


def _progress() -> Callable[[str], None]:
    """One line on stderr, rewritten in place, on a terminal only; "" clears it."""
    if not sys.stderr.isatty():
        return lambda _text: None

    def show(text: str) -> None:
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()

    return show


async def replay_from_args(args: argparse.Namespace, settings: OpsSettings, say: Say) -> int:
    from bridge.ops.replay import Replay, ReplayRun, summary

    kafka = settings.kafka
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    if not kafka.bootstrap_servers:
        raise UsageError("set BRIDGE_KAFKA__BOOTSTRAP_SERVERS or pass --bootstrap-servers")
    topic = args.topic or settings.topics.failures
    if not topic:
        raise UsageError("set BRIDGE_TOPICS__FAILURES or pass --topic")
    selection = selection_from_args(args, int(time.time() * 1000))
    timeout_s: float = args.timeout or settings.serving.timeout_ms / 1000
    run = ReplayRun(
        failures_topic=topic,
        group=args.group or replay_group(kafka.group_id, selection.reasons),
        selection=selection,
        limit=args.limit,
        dry_run=args.dry_run,
        timeout_s=timeout_s,
    )
    replay = Replay(kafka, run, _progress())
    try:
        await replay.run()
    except (CommandError, asyncio.CancelledError):
        if replay.tally.read:  # what was acknowledged and committed stays done: how much
            say(summary(run, replay))
        raise
    say(summary(run, replay))
    return 0
