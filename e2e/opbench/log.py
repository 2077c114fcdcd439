"""The benchmark's progress lines, on stderr so that stdout carries only the report."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(f"[opbench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
