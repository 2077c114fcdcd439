"""Peer servers (Triton via PyTriton, KServe, MLServer), each run in its own venv by the bench."""
