"""Davit inference runtime: Open Inference Protocol v2 (HTTP, gRPC) with dynamic batching."""

__version__ = "0.1.0"
