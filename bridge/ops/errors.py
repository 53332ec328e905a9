"""How an operator command ends when it does not succeed: a message and an exit code."""

from __future__ import annotations


class CommandError(Exception):
    """Refused or failed (exit 1); the message says why and what state things are in."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CommandError):
    """Bad arguments or settings (exit 2)."""

    exit_code = 2
