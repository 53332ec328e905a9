"""The wheel ships the service and the model-server side, never the developer tooling.

``tools/`` (demo, bench, chaos and their harness) runs from a checkout only: it finds
the repository by its own location, which an installed copy would get wrong.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools.harness.processes import REPO

pytestmark = pytest.mark.integration

# What a source checkout holds besides the sources; none of it is needed to build.
NOT_SOURCES = (
    ".git",
    ".venv",
    ".venv-runtime",
    "out",
    "build",
    "dist",
    "models",
    "*.egg-info",
    "__pycache__",
)


def build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` on a copy of the checkout, so the build's own files stay out of it."""
    copy = out / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(copy),
            "--no-deps",
            # The virtualenv's setuptools: a build needs no network.
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out / "dist"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (out / "dist").glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    wheel = build_wheel(REPO, tmp_path_factory.mktemp("wheel"))
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_ships_the_service_and_the_model_server(wheel_files: list[str]) -> None:
    for module in ("bridge/__init__.py", "bridge/cli.py", "bridge/app.py", "serving/__main__.py"):
        assert module in wheel_files, f"{module} is missing from the wheel"
    assert any(name.startswith("bridge/wire/") for name in wheel_files)


def test_the_wheel_ships_no_developer_tooling(wheel_files: list[str]) -> None:
    tooling = [
        name
        for name in wheel_files
        if name.startswith(("tools/", "bridge/dev/", "tests/"))
        or Path(name).stem in {"demo", "bench", "chaos", "harness"}
    ]
    assert tooling == []


def test_the_check_sees_tooling_when_it_is_shipped(tmp_path: Path) -> None:
    # The same build with tools/ added to the packages must fail the check above.
    source = tmp_path / "checkout"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    shipped = text.replace(
        'include = ["bridge*", "serving*"]', 'include = ["bridge*", "serving*", "tools*"]'
    )
    assert shipped != text, "pyproject.toml no longer lists the packages this test expects"
    pyproject.write_text(shipped)
    with zipfile.ZipFile(build_wheel(source, tmp_path / "build")) as archive:
        names = archive.namelist()
    assert "tools/demo.py" in names
    assert "tools/harness/processes.py" in names
