"""What the tooling tests check after a run: that nothing it started is left running."""

from __future__ import annotations

from pathlib import Path


def left_running(marker: str) -> list[str]:
    """Command lines of processes still running that mention ``marker`` (an out folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text:
            found.append(text)
    return found
