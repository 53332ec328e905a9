"""Model directories and a model server on a copy of the demo models, for the ops tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.harness.processes import DEMO_MODELS, ModelServer, local_models_config

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    server: ModelServer
    models: Path  # the copy: models/fraud/{1,2,3}
    config: Path  # the models.config the server was started with (labels stable->1, canary->2)

    @property
    def fraud(self) -> Path:
        return self.models / "fraud"


def copy_demo_models(root: Path) -> Path:
    """fraud/1 and fraud/2 from the demo, and fraud/3 (a copy of 2): on disk, not in the policy."""
    models = root / "models"
    for version in ("1", "2"):
        shutil.copytree(DEMO_MODELS / "fraud" / version, models / "fraud" / version)
    shutil.copytree(models / "fraud" / "2", models / "fraud" / "3")
    return models


@contextmanager
def model_server(root: Path) -> Iterator[Served]:
    models = copy_demo_models(root)
    config = local_models_config(REPO / "serving" / "models.config", root / "models.config", models)
    server = ModelServer(
        [
            f"--model_config_file={config}",
            "--allow_version_labels_for_unavailable_models",
            # A broken version ends at its first failure instead of retrying for minutes.
            "--max_num_load_retries=0",
        ],
        root / "server.log",
        ["fraud"],
    )
    server.start()
    try:
        yield Served(server, models, config)
    finally:
        server.stop()


def fake_models_config(tmp_path: Path) -> Path:
    """The shipped config over a fake model dir: versions 1 and 00002 (no real SavedModels)."""
    base = tmp_path / "models" / "fraud"
    for version in ("1", "00002"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"x")
    text = (REPO / "serving" / "models.config").read_text()
    path = tmp_path / "models.config"
    path.write_text(text.replace('base_path: "/models/fraud"', f'base_path: "{base}"'))
    return path
