"""Version directories as TF Serving reads them, and the atomic rewrite of a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bridge.ops.disk import readable_base, version_from_name, versions_on_disk, write_atomically


def _version(base: Path, name: str, marker: str | None = "saved_model.pb") -> None:
    (base / name).mkdir(parents=True)
    if marker is not None:
        (base / name / marker).write_bytes(b"x")


def test_versions_parse_like_tf_serving(tmp_path: Path) -> None:
    _version(tmp_path, "1")
    _version(tmp_path, "00000002")
    _version(tmp_path, "3", marker=None)  # half-copied: no saved_model.pb
    _version(tmp_path, "4", marker="saved_model.pbtxt")
    _version(tmp_path, "latest")
    (tmp_path / "5").write_text("a file, not a directory")
    found = versions_on_disk(tmp_path)
    assert sorted(found) == [1, 2, 4]
    assert found[2].name == "00000002"
    assert version_from_name("٣") is None  # a non-ASCII digit is no version


def test_readable_base(tmp_path: Path) -> None:
    assert readable_base(str(tmp_path)) == tmp_path
    assert readable_base(str(tmp_path / "missing")) is None
    assert readable_base("relative/path") is None
    assert readable_base("gs://bucket/models/fraud") is None


def test_write_atomically_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    write_atomically(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # renamed over, not written in place
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]  # no temporary left
