"""Rewrite the settings table in README.md from the settings themselves.

``python -m tools.readme_settings`` after adding or changing a setting; a
test fails while the README misses one.
"""

from __future__ import annotations

from bridge.settings import describe_settings
from tools.harness.processes import REPO

README = REPO / "README.md"
HEADER = "| Setting | Default | Meaning |\n|---|---|---|\n"
AFTER = "\n\nLogs are structured"


def main() -> None:
    text = README.read_text()
    start = text.index(HEADER) + len(HEADER)
    end = text.index(AFTER, start)
    rows = "\n".join(
        f"| `{name}` | {default} | {what} |" for name, default, what in describe_settings()
    )
    README.write_text(text[:start] + rows + text[end:])


if __name__ == "__main__":
    main()
