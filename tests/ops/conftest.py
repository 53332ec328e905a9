"""Every ops test starts from an environment without BRIDGE_* settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_") and name != "BRIDGE_TEST_KAFKA_BOOTSTRAP":
            monkeypatch.delenv(name)
