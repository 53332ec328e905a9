"""The version the bridge was installed as: in every log line and ``bridge_build_info``."""

from __future__ import annotations

import functools
from importlib import metadata

DISTRIBUTION = "tfs-kafka-bridge"


@functools.cache
def installed_version() -> str:
    """The installed distribution's version; "unknown" when run from a tree not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
