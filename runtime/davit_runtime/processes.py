"""Server processes for tests and benchmarks: wait for the line a server prints once it listens
(davit-runtime and davit-router both print one, with their ports), and read its metrics.
Imports nothing of the runtime's models, so the router's tests use it too."""

from __future__ import annotations

import selectors
import subprocess
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[tuple[str, str], ...], float]


def metric_samples(address: str, name: str) -> Samples:
    """Current values of one metric from `http://address/metrics`, keyed by sorted labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                values[tuple(sorted(sample.labels.items()))] = sample.value
    return values


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
