"""Starting a server process for tests and benchmarks: wait for the line it prints once it
listens (both davit-runtime and davit-router print one, with their ports). Imports nothing of
the runtime's models, so the router's tests use it too."""

from __future__ import annotations

import selectors
import subprocess
import time
from pathlib import Path


def await_ready_line(
    process: subprocess.Popen[str], prefix: str, timeout_s: float, log: Path, what: str
) -> dict[str, str]:
    """The `key=value` fields of the first stdout line starting with `prefix`; if the process
    exits or `timeout_s` passes first, it is killed and AssertionError carries its log."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return dict(part.split("=", 1) for part in line.split()[2:])
    finally:
        selector.close()
    process.kill()
    process.wait()
    raise AssertionError(f"{what} did not become ready; log:\n{log.read_text()}")
