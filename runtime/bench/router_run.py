#!/usr/bin/env python3
"""Entry point of `make bench-router`: `python runtime/bench/router_run.py [--duration S]`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
