#!/usr/bin/env python3
"""Entry point of `make bench-operator`: `python e2e/opbench/run.py [--sizes 100,300] [--help]`."""

from __future__ import annotations

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
# opbench lives in e2e/; it reuses the runtime benchmark's process monitor (runtime/bench).
sys.path[:0] = [str(here.parent), str(here.parents[1] / "runtime")]

from opbench.main import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
