"""One format on one stream: structlog's lines and the standard library's records alike."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from bridge.logs import configure_logging
from bridge.version import installed_version


class Out(io.TextIOWrapper):
    """stdout as a pipe: text and bytes writes land in the same buffer, not a terminal."""

    def __init__(self) -> None:
        self.raw_bytes = io.BytesIO()
        super().__init__(self.raw_bytes, encoding="utf-8", write_through=True)

    def lines(self) -> list[dict[str, Any]]:
        self.flush()
        return [orjson.loads(line) for line in self.raw_bytes.getvalue().splitlines()]


@pytest.fixture
def out() -> Iterator[Out]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = Out()
    configure_logging("info", "json", stream)
    # Cached loggers would keep this configuration past the test (capture_logs elsewhere).
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level


def test_a_stdlib_record_is_one_json_line_with_logger_level_and_version(out: Out) -> None:
    logging.getLogger("aiokafka").warning("Heartbeat failed for group %s", "g1")

    (line,) = out.lines()
    assert line["event"] == "Heartbeat failed for group g1"
    assert line["logger"] == "aiokafka"
    assert line["level"] == "warning"
    assert line["service_version"] == installed_version() != "unknown"
    assert line["timestamp"].endswith("Z")


def fail() -> None:
    raise ValueError("boom")


def test_a_stdlib_traceback_is_structured_not_plain_text(out: Out) -> None:
    try:
        fail()
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    (line,) = out.lines()
    assert line["logger"] == "asyncio" and line["level"] == "error"
    assert line["exception"][0]["exc_type"] == "ValueError"


def test_structlog_lines_carry_the_module_name_and_version(out: Out) -> None:
    structlog.get_logger("bridge.lanes").info("signature_changed", target="fraud", version=2)
    structlog.get_logger("bridge.workers").debug("batch", size=1)  # below the level

    (line,) = out.lines()
    assert line["event"] == "signature_changed" and line["target"] == "fraud"
    assert line["version"] == 2, "a line's own version (the model's) is kept"
    assert line["logger"] == "bridge.lanes"
    assert line["level"] == "info"
    assert line["service_version"] == installed_version()


def test_library_info_records_stay_out_below_warning(out: Out) -> None:
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    logging.getLogger("aiokafka").error("Unable to update metadata")

    assert [line["event"] for line in out.lines()] == ["Unable to update metadata"]
