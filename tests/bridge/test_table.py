"""The one text-table printer: the operator commands' tables and the developer tools'."""

from __future__ import annotations

import pytest

from bridge.ops.output import table


def test_columns_are_left_aligned_and_trailing_spaces_trimmed_by_default() -> None:
    text = table(["VERSION", "STATE"], [["1", "AVAILABLE"], ["10", ""]], indent="  ")
    assert text.splitlines() == ["  VERSION  STATE", "  1        AVAILABLE", "  10"]


def test_numbers_right_aligned_under_a_rule() -> None:
    text = table(
        ["row", "events/s", ""], [["grpc", 16933, "PASS"], ["rest", 9, ""]], align="lrl", rule=True
    )
    assert text.splitlines() == [
        "row   events/s",
        "----  --------  ----",
        "grpc     16933  PASS",
        "rest         9",
    ]


def test_a_row_with_a_missing_cell_is_refused() -> None:
    with pytest.raises(ValueError, match="one cell per column"):
        table(["a", "b"], [["1"]])
