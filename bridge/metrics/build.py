"""The version the bridge was installed as, for ``bridge_build_info``."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "tfs-kafka-bridge"


def build_version() -> str:
    """The installed distribution's version; "unknown" when run from a tree not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
