"""Prometheus metrics for the bridge, with model, route and served version as labels.

``collectors`` holds what is measured (on a ``prometheus_client`` registry per
``Metrics``); ``endpoint`` serves it on ``BRIDGE_METRICS__PORT`` (0 = off).
"""

from bridge.metrics.collectors import BUCKETS_MS, Metrics
from bridge.metrics.endpoint import MetricsServer, serve_metrics

__all__ = ["BUCKETS_MS", "Metrics", "MetricsServer", "serve_metrics"]
