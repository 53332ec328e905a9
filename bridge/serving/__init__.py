"""Reaching TF Serving: the ``ModelClient`` interface and its gRPC and REST
implementations, the shared up/down answer (``health``) and the predictor that
retries, holds through outages and bisects rejected batches.
"""
