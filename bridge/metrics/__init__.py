"""Prometheus metrics for the bridge, with model, route and served version as labels.

``collectors`` holds what is measured (on a ``prometheus_client`` registry per
``Metrics``); ``histograms`` the hand-counted histograms their owners keep (the
predictor's model calls, the workers' batch sizes); ``endpoint`` serves it all on
``BRIDGE_METRICS__PORT`` (0 = off).
"""

from bridge.metrics.collectors import Metrics
from bridge.metrics.endpoint import MetricsServer, serve_metrics
from bridge.metrics.histograms import Histogram

__all__ = ["Histogram", "Metrics", "MetricsServer", "serve_metrics"]
