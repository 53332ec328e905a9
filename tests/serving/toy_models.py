"""Tiny SavedModels for the serving tests, each exported in a fraction of a second.

- ``scale``: ``y = x * version`` (float32 ``[-1]``), so the version that served a
  request shows in its output; a second signature ``negate`` gives ``-x * version``.
- ``multi``: three inputs and three outputs of different dtypes; ``a`` goes through a
  matmul, so a wrongly shaped ``a`` fails inside the TF runtime.
- ``write_broken_version``: a version directory TF Serving would find but cannot load.
- ``write_wrong_tags_version``: a valid SavedModel whose only meta graph is not tagged
  ``serve``.
- ``ModelStore``: exports each (kind, version) once and copies it into base paths.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2


class _Scale(tf.Module):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.factor = tf.Variable(float(version), name="factor")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * self.factor}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def negate(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": -x * self.factor}


class _Multi(tf.Module):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.weights = tf.Variable([[1.0], [2.0]], name="weights")
        self.version = tf.constant(version, tf.int64)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None], tf.int64, name="n"),
            tf.TensorSpec([None], tf.string, name="s"),
        ]
    )
    def serve(self, a: tf.Tensor, n: tf.Tensor, s: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "score": tf.squeeze(tf.matmul(a, self.weights), axis=1),
            "n_plus_version": n + self.version,
            "shout": tf.strings.upper(s),
        }


def export_scale_model(path: Path, version: int) -> Path:
    """Export the ``scale`` model for ``version`` into ``path`` (the version directory)."""
    module = _Scale(version)
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "negate": module.negate}
    )
    return path


def export_multi_model(path: Path, version: int) -> Path:
    """Export the ``multi`` model for ``version`` into ``path``."""
    module = _Multi(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


EXPORTERS = {"scale": export_scale_model, "multi": export_multi_model}


def write_broken_version(path: Path) -> Path:
    """A version directory with a ``saved_model.pb`` that is not a SavedModel."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(b"\xff\xff this is not a SavedModel \xff")
    return path


def write_wrong_tags_version(source: Path, path: Path) -> Path:
    """Copy a SavedModel, retagging its meta graph ``train`` instead of ``serve``."""
    shutil.copytree(source, path)
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        del meta_graph.meta_info_def.tags[:]
        meta_graph.meta_info_def.tags.append("train")
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    return path


class ModelStore:
    """Exports toy models on first use and copies them into model base paths."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def exported(self, kind: str, version: int) -> Path:
        path = self._root / kind / str(version)
        if not path.exists():
            EXPORTERS[kind](path, version)
        return path

    def install(
        self, base_path: Path, version: int, kind: str = "scale", dirname: str = ""
    ) -> Path:
        """Copy version ``version`` of ``kind`` to ``base_path/<dirname or version>``."""
        target = base_path / (dirname or str(version))
        if kind == "broken":
            return write_broken_version(target)
        # Copied under a temporary name then renamed, as a real deployment should, so a
        # polling manager never sees half a SavedModel.
        staging = base_path / f".staging-{target.name}"
        shutil.copytree(self.exported(kind, version), staging)
        staging.rename(target)
        return target
