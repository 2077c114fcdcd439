"""The router as a real process on loopback ports, for the process tests and the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import davit_router
from davit_router.server import ADMIN_PREFIX, READY_PREFIX
from davit_runtime.processes import Samples, await_ready_line, metric_samples

# The folder this davit_router is imported from: the router a test starts runs the same code as
# the test (a worktree's, not whatever an editable install elsewhere points at).
_PACKAGE_ROOT = Path(davit_router.__file__).resolve().parents[1]


def write_config(path: Path, document: dict[str, Any]) -> None:
    """Replace the configuration file at once (a rename, as a ConfigMap update swaps it), so
    the router never reads half a file."""
    staged = path.with_suffix(".staged")
    staged.write_text(json.dumps(document))
    os.replace(staged, path)


@dataclass
class RunningRouter:
    process: subprocess.Popen[str]
    http: str  # host:port of the traffic listener
    admin: str
    grpc: str
    config: Path | None  # None: the router reads a ConfigMap
    log: Path

    def configure(self, document: dict[str, Any]) -> None:
        """A new configuration, applied once the router has read it (SIGHUP, then /config)."""
        assert self.config is not None, "a router on a ConfigMap is configured through it"
        write_config(self.config, document)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10

        def revisions(listed: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return [(r["name"], r["weight"], list(r.get("endpoints", []))) for r in listed]

        while time.monotonic() < deadline:
            if revisions(self.applied()["revisions"]) == revisions(document["revisions"]):
                return
            time.sleep(0.05)
        raise AssertionError(f"the router did not apply {document}; log:\n{self.log.read_text()}")

    def applied(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.admin}/config", timeout=10) as response:
            document: dict[str, Any] = json.load(response)
        return document

    def samples(self, name: str) -> Samples:
        """Current values of one metric from /metrics, keyed by sorted labels."""
        return metric_samples(self.admin, name)

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name` over every series whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for key, v in self.samples(name).items() if wanted <= set(key))

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


@dataclass
class StartingRouter:
    """A router whose admin port listens, and which may still wait for its configuration."""

    process: subprocess.Popen[str]
    admin: str
    log: Path

    def ready(self, timeout_s: float = 30.0, config: Path | None = None) -> RunningRouter:
        """The router, once it routes (its ready line)."""
        fields = await_ready_line(self.process, READY_PREFIX, timeout_s, self.log, "the router")
        return RunningRouter(
            self.process, fields["http"], fields["admin"], fields["grpc"], config, self.log
        )


def start_router(log: Path, *flags: str, timeout_s: float = 30.0) -> StartingRouter:
    """Start `davit-router serve` with `flags` (its configuration source, `--kubeconfig PATH`)
    on free loopback ports, with no drain at SIGTERM unless `flags` ask for one; returned once
    its admin port listens."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), path]))}
    command = [
        sys.executable, "-m", "davit_router", "serve", "--host", "127.0.0.1",
        "--port", "0", "--admin-port", "0", "--grpc-port", "0", "--drain-seconds", "0", *flags,
    ]  # fmt: skip
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_handle, text=True, env=env
        )
    fields = await_ready_line(process, ADMIN_PREFIX, timeout_s, log, "the router's admin port")
    return StartingRouter(process, fields["admin"], log)


def launch_router(
    config: Path, document: dict[str, Any], log: Path, *extra: str, ready_timeout_s: float = 30.0
) -> RunningRouter:
    """Write `document` to `config` and start `davit-router serve --config` on free loopback
    ports; `extra` are more flags (`--kubeconfig PATH`)."""
    write_config(config, document)
    starting = start_router(log, "--config", str(config), *extra, timeout_s=ready_timeout_s)
    return starting.ready(ready_timeout_s, config)
