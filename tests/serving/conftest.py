"""Fixtures for the serving tests: toy SavedModels laid out like a model base path.

Each (kind, version) is exported once per session and copied where a test wants it,
so a test pays for a directory copy, not for TensorFlow tracing and saving.
"""

from __future__ import annotations

import os

# Before TensorFlow is imported (through toy_models): keep its C++ INFO logs quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.serving.toy_models import ModelStore


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("exported"))


ModelDirFactory = Callable[..., Path]


@pytest.fixture
def model_dir(tmp_path: Path, model_store: ModelStore) -> ModelDirFactory:
    """``model_dir(name, versions, kind="scale")`` -> an absolute model base path."""

    def make(name: str = "toy", versions: Iterable[int] = (1,), kind: str = "scale") -> Path:
        base_path = tmp_path / "models" / name
        base_path.mkdir(parents=True, exist_ok=True)
        for version in versions:
            model_store.install(base_path, version, kind)
        return base_path

    return make
