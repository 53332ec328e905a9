"""Train and export the ``fraud`` demo model as SavedModel versions 1 and 2.

Run as ``python -m serving.demo_model --output serving/models/fraud``.

The data imitate the public credit-card fraud data set (two days of card payments:
seconds since the first payment, the amount, 28 anonymised PCA components V1..V28,
about 0.2% fraud) but are synthetic and seeded, so nothing is downloaded and every
run with the same seed exports the same models. Fraud comes in two made-up kinds
(small "card testing" charges and large "account takeover" purchases), each shifted
in a few PCA components and drawn from a wider spread, so the classes overlap and a
model has something to learn that a single feature does not give away.

- Version 1: logistic regression on three inputs (log amount, V14, V17): the quick
  first model, and the ``stable`` label in ``models.config``.
- Version 2: a small neural network on every input (amount, time of day, all 28
  components) trained with class weights: higher recall at a similar precision,
  the ``canary`` label.

Both versions export the same ``serving_default`` signature, so a client can be
switched between them by label alone::

    inputs:  time float32 [-1], amount float32 [-1], pca float32 [-1, 28]
    outputs: fraud_probability float32 [-1], flagged bool [-1]

Clients send raw event values: the scaling (log of the amount, standardisation,
hour of day) is part of the exported graph. ``flagged`` is
``fraud_probability >= threshold`` with the version's own threshold, chosen on the
training data. Held-out metrics go to ``<version>/assets.extra/metrics.json``,
which TensorFlow Serving ignores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

MODEL_NAME = "fraud"
NUM_PCA = 28
DEFAULT_SEED = 1_337
FRAUD_RATE = 0.002
SECONDS_PER_DAY = 86_400.0
DAYS = 2
SIGNATURE_KEY = "serving_default"

# Rows per split. Fraud is rare, so the held-out split is the bigger one: 200k rows
# hold about 400 frauds, enough to read recall to a couple of percent; training on
# 100k rows (about 200 frauds) keeps the whole run to seconds on two CPU cores.
TRAIN_ROWS = 100_000
HOLDOUT_ROWS = 200_000

# Spread of V1..V28 among legitimate payments: roughly the per-component standard
# deviations of the public data set (PCA output, so decreasing).
# fmt: off
PCA_STD = np.array([
    1.96, 1.65, 1.52, 1.42, 1.38, 1.33, 1.24, 1.19, 1.10, 1.09, 1.02, 1.00, 1.00, 0.96,
    0.92, 0.88, 0.85, 0.84, 0.81, 0.77, 0.73, 0.73, 0.62, 0.61, 0.52, 0.48, 0.40, 0.33,
])
# fmt: on


@dataclass(frozen=True)
class FraudKind:
    """How one kind of fraud differs from legitimate payments."""

    share: float  # of all frauds
    shifts: Mapping[int, float]  # 1-based component -> mean shift in legitimate stds
    spread: float  # std multiplier on the shifted components: fraud is more varied
    wide: Mapping[int, float]  # 1-based component -> std multiplier, mean unchanged
    amount_median: float
    amount_sigma: float  # of log(amount)


FRAUD_KINDS = (
    # Many tiny charges that check whether a stolen card works.
    FraudKind(
        share=0.4,
        shifts={4: 1.5, 10: -1.8, 12: -2.1, 14: -2.1},
        spread=1.4,
        wide={},
        amount_median=1.5,
        amount_sigma=0.7,
    ),
    # Few large purchases from a taken-over account. The wide V7 only shows in
    # the variance, which a linear model cannot use.
    FraudKind(
        share=0.6,
        shifts={3: -1.8, 11: 1.6, 14: -2.3, 16: -1.6, 17: -2.3},
        spread=1.4,
        wide={7: 3.0},
        amount_median=180.0,
        amount_sigma=0.9,
    ),
)


@dataclass(frozen=True)
class Dataset:
    """Payments as columns, as the exported signature takes them."""

    time: np.ndarray  # float32 [n], seconds since the first payment
    amount: np.ndarray  # float32 [n]
    pca: np.ndarray  # float32 [n, 28]
    label: np.ndarray  # bool [n], True = fraud

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def rows(self, index: slice | np.ndarray) -> Dataset:
        return Dataset(self.time[index], self.amount[index], self.pca[index], self.label[index])


def make_dataset(rows: int, rng: np.random.Generator) -> Dataset:
    """Synthetic payments shaped like the public data set; all randomness from ``rng``."""
    label = rng.random(rows) < FRAUD_RATE
    n_fraud = int(label.sum())

    # Legitimate payments follow the day: most around the afternoon, some at any hour.
    day = rng.integers(0, DAYS, rows).astype(np.float64)
    daytime = rng.random(rows) < 0.8
    time_of_day = np.where(
        daytime,
        rng.normal(14 * 3600.0, 4.5 * 3600.0, rows) % SECONDS_PER_DAY,
        rng.uniform(0.0, SECONDS_PER_DAY, rows),
    )
    amount = rng.lognormal(math.log(22.0), 1.4, rows)
    pca = rng.standard_normal((rows, NUM_PCA)) * PCA_STD

    # Fraud does not keep office hours: uniform over the day, so it is over-represented
    # at night.
    time_of_day[label] = rng.uniform(0.0, SECONDS_PER_DAY, n_fraud)
    kind = rng.choice(len(FRAUD_KINDS), size=n_fraud, p=[k.share for k in FRAUD_KINDS])
    fraud_rows = np.flatnonzero(label)
    for k, spec in enumerate(FRAUD_KINDS):
        idx = fraud_rows[kind == k]
        amount[idx] = rng.lognormal(math.log(spec.amount_median), spec.amount_sigma, idx.size)
        for component, shift in spec.shifts.items():
            c = component - 1
            noise = rng.standard_normal(idx.size) * spec.spread
            pca[idx, c] = (shift + noise) * PCA_STD[c]
        for component, factor in spec.wide.items():
            c = component - 1
            pca[idx, c] = rng.standard_normal(idx.size) * factor * PCA_STD[c]

    return Dataset(
        time=(day * SECONDS_PER_DAY + time_of_day).astype(np.float32),
        amount=np.round(amount, 2).astype(np.float32),
        pca=pca.astype(np.float32),
        label=label,
    )


# --- the exported model ---------------------------------------------------------


@dataclass(frozen=True)
class VersionSpec:
    """What distinguishes one exported version from the other."""

    version: int
    description: str
    pca_components: tuple[int, ...]  # 1-based V-numbers the model reads
    use_time: bool  # hour of day as sin/cos
    hidden_units: int  # 0 = logistic regression
    positive_weight: float  # class weight of fraud rows in the loss
    steps: int
    learning_rate: float
    l2: float


VERSIONS = (
    VersionSpec(
        version=1,
        description="logistic regression on log amount, V14 and V17",
        pca_components=(14, 17),
        use_time=False,
        hidden_units=0,
        positive_weight=1.0,
        steps=300,
        learning_rate=0.05,
        l2=1e-4,
    ),
    VersionSpec(
        version=2,
        description="neural network (32 ReLU units) on amount, time of day and V1..V28, "
        "class-weighted",
        pca_components=tuple(range(1, NUM_PCA + 1)),
        use_time=True,
        hidden_units=32,
        positive_weight=20.0,
        steps=400,
        learning_rate=0.02,
        # Stronger than version 1's: with 1e-4 its ~1000 weights learn the ~180
        # training frauds by heart (training recall 0.99, held-out 0.64; 0.75 now).
        l2=1e-3,
    ),
)


class FraudModel(tf.Module):
    """Feature scaling and a zero- or one-hidden-layer network, in one graph.

    Training and serving run the same ``features`` code, so the scaling a client
    relies on cannot drift from the scaling the weights were fitted to.
    """

    def __init__(self, spec: VersionSpec, train: Dataset, rng: np.random.Generator) -> None:
        super().__init__(name=f"fraud_v{spec.version}")
        self.spec = spec
        # Fixed statistics of the training split, stored as constants in the graph.
        log_amount = np.log1p(train.amount.astype(np.float64))
        self._amount_mean = tf.constant(log_amount.mean(), tf.float32)
        self._amount_std = tf.constant(log_amount.std(), tf.float32)
        columns = [c - 1 for c in spec.pca_components]
        self._pca_columns = tf.constant(columns, tf.int32)
        pca = train.pca[:, columns].astype(np.float64)
        self._pca_mean = tf.constant(pca.mean(axis=0), tf.float32)
        self._pca_std = tf.constant(pca.std(axis=0), tf.float32)

        width = 1 + len(columns) + (2 if spec.use_time else 0)
        # Weights start from numpy's seeded generator, not TensorFlow's global seed,
        # so a run does not depend on what else the process did with TensorFlow.
        self.weights: list[tf.Variable] = []
        if spec.hidden_units:
            limit = math.sqrt(6.0 / (width + spec.hidden_units))  # Glorot uniform
            self.weights += [
                tf.Variable(
                    rng.uniform(-limit, limit, (width, spec.hidden_units)), dtype=tf.float32
                ),
                tf.Variable(np.zeros(spec.hidden_units), dtype=tf.float32),
            ]
            width = spec.hidden_units
        limit = math.sqrt(6.0 / (width + 1))
        self.weights += [
            tf.Variable(rng.uniform(-limit, limit, (width, 1)), dtype=tf.float32),
            # Start at the base rate, so the first steps are not spent learning it.
            tf.Variable([math.log(FRAUD_RATE * spec.positive_weight)], dtype=tf.float32),
        ]
        # Class weights inflate the odds by positive_weight; taking its log off the
        # logit makes fraud_probability a probability again.
        self._logit_offset = tf.constant(-math.log(spec.positive_weight), tf.float32)
        self.threshold = tf.Variable(0.5, dtype=tf.float32, trainable=False)

    def features(self, time: tf.Tensor, amount: tf.Tensor, pca: tf.Tensor) -> tf.Tensor:
        """Raw event fields -> the network's input matrix."""
        # Amounts are heavy-tailed; their log is roughly normal. Refunds or bad
        # inputs below zero are clipped rather than turned into NaN.
        log_amount = tf.math.log1p(tf.maximum(amount, 0.0))
        parts = [((log_amount - self._amount_mean) / self._amount_std)[:, None]]
        picked = tf.gather(pca, self._pca_columns, axis=1)
        parts.append((picked - self._pca_mean) / self._pca_std)
        if self.spec.use_time:
            # Only the time of day carries signal; sin/cos make 23:59 and 00:00 close.
            angle = (2.0 * math.pi / SECONDS_PER_DAY) * tf.math.floormod(time, SECONDS_PER_DAY)
            parts.append(tf.stack([tf.sin(angle), tf.cos(angle)], axis=1))
        return tf.concat(parts, axis=1)

    def logits(self, features: tf.Tensor) -> tf.Tensor:
        """Class-weighted logits [n]; fraud_probability is sigmoid(logits + offset)."""
        h = features
        if self.spec.hidden_units:
            h = tf.nn.relu(h @ self.weights[0] + self.weights[1])
        return tf.reshape(h @ self.weights[-2] + self.weights[-1], [-1])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="time"),
            tf.TensorSpec([None], tf.float32, name="amount"),
            tf.TensorSpec([None, NUM_PCA], tf.float32, name="pca"),
        ]
    )
    def serve(self, time: tf.Tensor, amount: tf.Tensor, pca: tf.Tensor) -> dict[str, tf.Tensor]:
        """The ``serving_default`` signature."""
        logits = self.logits(self.features(time, amount, pca)) + self._logit_offset
        probability = tf.sigmoid(logits)
        return {
            "fraud_probability": tf.identity(probability, name="fraud_probability"),
            "flagged": tf.greater_equal(probability, self.threshold, name="flagged"),
        }

    def probability(self, data: Dataset) -> np.ndarray:
        """Calibrated fraud probabilities for ``data`` (float32 [n])."""
        # Eager, the same ops as ``serve``: calling the tf.function from every new
        # model would retrace it each time (and make TensorFlow warn about it).
        x = self.features(tf.constant(data.time), tf.constant(data.amount), tf.constant(data.pca))
        return np.asarray(tf.sigmoid(self.logits(x) + self._logit_offset), dtype=np.float32)


def fit(model: FraudModel, train: Dataset) -> None:
    """Full-batch Adam on the class-weighted logistic loss."""
    spec = model.spec
    x = model.features(tf.constant(train.time), tf.constant(train.amount), tf.constant(train.pca))
    y = tf.constant(train.label, tf.float32)
    # Normalised to mean 1, so the L2 penalty weighs the same against the data term
    # whatever the class weight.
    row_weight_np = np.where(train.label, spec.positive_weight, 1.0)
    row_weight = tf.constant(row_weight_np / row_weight_np.mean(), tf.float32)

    # Adam written out: a dozen lines instead of pulling Keras into a plain tf.Module.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = [tf.Variable(tf.zeros_like(w)) for w in model.weights]
    v = [tf.Variable(tf.zeros_like(w)) for w in model.weights]
    step = tf.Variable(0.0)

    @tf.function
    def train_step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                row_weight * tf.nn.sigmoid_cross_entropy_with_logits(y, model.logits(x))
            )
            # Penalise weight matrices only (every other variable), never biases.
            loss += spec.l2 * tf.add_n([tf.reduce_sum(w**2) for w in model.weights[::2]])
        grads = tape.gradient(loss, model.weights)
        step.assign_add(1.0)
        lr = spec.learning_rate * tf.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
        for w, g, m_w, v_w in zip(model.weights, grads, m, v, strict=True):
            m_w.assign(beta1 * m_w + (1.0 - beta1) * g)
            v_w.assign(beta2 * v_w + (1.0 - beta2) * g * g)
            w.assign_sub(lr * m_w / (tf.sqrt(v_w) + eps))
        return loss

    for _ in range(spec.steps):
        train_step()


# --- metrics ----------------------------------------------------------------------


def precision_recall(label: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """Precision (1.0 when nothing is flagged) and recall of boolean predictions."""
    true_positives = int(np.sum(label & flagged))
    n_flagged = int(np.sum(flagged))
    precision = true_positives / n_flagged if n_flagged else 1.0
    recall = true_positives / max(int(np.sum(label)), 1)
    return precision, recall


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the chance a fraud outranks a legitimate payment."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    # Tied scores share their mean rank.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos = int(label.sum())
    n_neg = len(label) - n_pos
    if not n_pos or not n_neg:
        return math.nan  # undefined with one class only
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise), the usual rare-class summary."""
    order = np.argsort(-score, kind="stable")
    hits = label[order]
    cumulative = np.cumsum(hits)
    precision_at = cumulative / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].sum() / max(int(hits.sum()), 1))


def choose_threshold(label: np.ndarray, score: np.ndarray) -> float:
    """The score that maximises F1 on ``label``; payments at or above it are flagged."""
    order = np.argsort(-score, kind="stable")
    hits = label[order].astype(np.float64)
    true_positives = np.cumsum(hits)
    flagged = np.arange(1, len(hits) + 1)
    f1 = 2 * true_positives / (flagged + hits.sum())
    # Only cut between distinct scores: ">= threshold" flags every tie at once.
    sorted_scores = score[order]
    distinct = np.append(sorted_scores[1:] < sorted_scores[:-1], True)
    best = int(np.argmax(np.where(distinct, f1, -1.0)))
    return float(sorted_scores[best])


def evaluate(label: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    precision, recall = precision_recall(label, probability >= threshold)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "roc_auc": round(roc_auc(label, probability), 4),
        "average_precision": round(average_precision(label, probability), 4),
    }


# --- export -----------------------------------------------------------------------


# The signature clients are written against: alias -> (dtype, shape), -1 = any size.
EXPECTED_INPUTS = {
    "time": ("float32", [-1]),
    "amount": ("float32", [-1]),
    "pca": ("float32", [-1, NUM_PCA]),
}
EXPECTED_OUTPUTS = {
    "fraud_probability": ("float32", [-1]),
    "flagged": ("bool", [-1]),
}


def describe_signature(export_dir: Path) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Tags, inputs and outputs of ``serving_default``, read from saved_model.pb itself."""
    saved = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = saved.meta_graphs
    signature = meta_graph.signature_def[SIGNATURE_KEY]

    def described(tensors: Mapping[str, Any]) -> dict[str, tuple[str, list[int]]]:
        return {
            key: (tf.dtypes.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
            for key, info in tensors.items()
        }

    return (
        list(meta_graph.meta_info_def.tags),
        described(signature.inputs),
        described(signature.outputs),
    )


def check_signature(export_dir: Path) -> None:
    """Insist on the exact serving signature before a version is published.

    A renamed argument or a lost static shape would still load in Python but change
    what clients must send, so the export fails instead.
    """
    tags, inputs, outputs = describe_signature(export_dir)
    if tags != ["serve"] or inputs != EXPECTED_INPUTS or outputs != EXPECTED_OUTPUTS:
        raise RuntimeError(
            f"{SIGNATURE_KEY} has tags={tags} inputs={inputs} outputs={outputs}, "
            f"want tags=['serve'] inputs={EXPECTED_INPUTS} outputs={EXPECTED_OUTPUTS}"
        )


def export_version(model: FraudModel, output: Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``output/<version>`` so that a polling server never sees it half-written.

    The SavedModel goes to a hidden temporary directory beside the final one (a name
    that does not parse as a version number, which TensorFlow Serving skips), then
    one rename publishes it.
    """
    final = output / str(model.spec.version)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=output))
    try:
        # mkdtemp creates 0700; the serving container may run as another user.
        staging.chmod(0o755)
        tf.saved_model.save(model, str(staging), signatures={SIGNATURE_KEY: model.serve})
        extra = staging / "assets.extra"
        extra.mkdir()
        (extra / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        check_signature(staging)
        if final.exists():
            # Replacing a version: move the old one aside first (rename cannot replace
            # a non-empty directory). A poll landing between the two renames sees the
            # version briefly missing; TF Serving does not reload a version whose files
            # change anyway, so a running server keeps what it loaded either way.
            retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=output))
            retired.rmdir()
            final.rename(retired)
            staging.rename(final)
            shutil.rmtree(retired)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


@dataclass(frozen=True)
class VersionResult:
    version: int
    path: Path
    metrics: dict[str, Any]
    seconds: float


def train_and_export(output: Path, seed: int = DEFAULT_SEED) -> list[VersionResult]:
    """Generate the data, train every version and export it under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = make_dataset(TRAIN_ROWS + HOLDOUT_ROWS, rng)
    # Rows are independent draws, so the first rows are as good a random split as any.
    train = data.rows(slice(0, TRAIN_ROWS))
    holdout = data.rows(slice(TRAIN_ROWS, None))

    results = []
    for spec in VERSIONS:
        started = time.perf_counter()
        # One generator per version, derived from the seed: version 2's weights do not
        # depend on how many numbers version 1 drew.
        model = FraudModel(spec, train, np.random.default_rng([seed, spec.version]))
        fit(model, train)
        threshold = choose_threshold(train.label, model.probability(train))
        model.threshold.assign(threshold)
        metrics: dict[str, Any] = {
            "model": MODEL_NAME,
            "version": spec.version,
            "description": spec.description,
            "seed": seed,
            "threshold": round(threshold, 6),
            "threshold_rule": "max F1 on the training split",
            "train_rows": len(train),
            "train_frauds": int(train.label.sum()),
            "holdout_rows": len(holdout),
            "holdout_frauds": int(holdout.label.sum()),
            "holdout": evaluate(holdout.label, model.probability(holdout), threshold),
        }
        path = export_version(model, output, metrics)
        results.append(VersionResult(spec.version, path, metrics, time.perf_counter() - started))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.demo_model", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="model base path, e.g. serving/models/fraud"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data and weight seed")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results = train_and_export(args.output, args.seed)
    for result in results:
        m = result.metrics
        h = m["holdout"]
        print(
            f"{MODEL_NAME} v{result.version}: {m['description']}\n"
            f"    held out ({m['holdout_rows']} rows, {m['holdout_frauds']} frauds): "
            f"precision {h['precision']:.3f}  recall {h['recall']:.3f}  "
            f"ROC AUC {h['roc_auc']:.3f}  avg precision {h['average_precision']:.3f}  "
            f"threshold {m['threshold']:.4f}  ({result.seconds:.1f} s) -> {result.path}"
        )
    print(f"trained and exported in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
