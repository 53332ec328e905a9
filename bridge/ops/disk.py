"""The file system side of the operations: version directories and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# What makes a directory a SavedModel (TensorFlow reads either).
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def readable_base(base_path: str) -> Path | None:
    """``base_path`` as a local directory, or None when this machine cannot read it.

    URIs (gs://, s3://, ...) and paths that only exist inside the server's
    container (e.g. ``/models/fraud`` from the sidecar's config) are not readable.
    """
    if "://" in base_path:
        return None
    path = Path(base_path)
    if not path.is_absolute() or not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        return None
    return path


def version_from_name(name: str) -> int | None:
    """TF Serving's reading of a version directory name: ``00000123`` is 123."""
    if not name.isascii() or not name.isdigit():
        return None
    return int(name)


def versions_on_disk(base: Path) -> dict[int, Path]:
    """Version -> directory, for the numeric children of ``base`` that hold a SavedModel."""
    found: dict[int, Path] = {}
    for child in sorted(base.iterdir()):
        version = version_from_name(child.name)
        if version is None or not child.is_dir():
            continue
        if any((child / name).is_file() for name in SAVED_MODEL_FILES):
            found.setdefault(version, child)
    return found


def check_writable(path: Path) -> None:
    """Raise OSError unless ``path`` can be replaced by a file written next to it."""
    directory = path.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to the directory {directory}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s directory, then rename it over ``path``.

    Readers see the old file or the new one, never half of one. The file keeps
    its permission bits.
    """
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
