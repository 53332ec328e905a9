"""Kafka -> TensorFlow Serving -> Kafka, at-least-once.

Nothing under ``bridge`` imports TensorFlow: the wire messages it needs are
generated from ``proto/`` into ``bridge.wire`` (see README, "Why no
tensorflow-serving-api").
"""
