"""Talking to TF Serving: one ``ModelClient`` interface, a gRPC and a REST implementation."""
