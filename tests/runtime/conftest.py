"""Fixtures for runtime tests: model repositories and real server processes on 127.0.0.1."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from davit_runtime.testing import ModelSpec, write_model_repository

READY_PREFIX = "davit-runtime ready "


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    http: str  # host:port
    grpc: str
    log: Path

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Current values of one metric family from /metrics, keyed by sorted labels."""
        import urllib.request

        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=10) as response:
            text = response.read().decode()
        values: dict[tuple[tuple[str, str], ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    values[tuple(sorted(sample.labels.items()))] = sample.value
        return values

    def metric(self, name: str, **labels: str) -> float:
        return self.samples(name).get(tuple(sorted(labels.items())), 0.0)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def launch_server(
    repository: Path, log: Path, *extra: str, ready_timeout_s: float = 120.0
) -> RunningServer:
    """Start `davit-runtime serve` on random loopback ports and wait for its ready line."""
    command = [
        sys.executable, "-m", "davit_runtime", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--torch-threads", "1",
        "--cache-dir", str(log.parent / "model-cache"), *extra,
    ]  # fmt: skip
    log_handle = log.open("w")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log_handle, text=True, env=dict(os.environ)
    )
    log_handle.close()
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(READY_PREFIX):
                fields = dict(part.split("=", 1) for part in line.split()[2:])
                return RunningServer(process, fields["http"], fields["grpc"], log)
    finally:
        selector.close()
    process.kill()
    process.wait()
    raise AssertionError(f"server did not become ready; log:\n{log.read_text()}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers for one test; all are stopped at teardown."""
    started: list[RunningServer] = []

    def start(repository: Path, *extra: str) -> RunningServer:
        server = launch_server(repository, tmp_path / f"server-{len(started)}.log", *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@dataclass
class MainRepository:
    root: Path
    linear: ModelSpec
    typed: ModelSpec
    cnn: ModelSpec


@pytest.fixture(scope="session")
def main_repository(tmp_path_factory: pytest.TempPathFactory) -> MainRepository:
    root = tmp_path_factory.mktemp("repository")
    linear = write_model_repository(
        root, "linear", "linear", max_batch_size=32, max_queue_delay_ms=5.0, fmt="torchscript"
    )
    typed = write_model_repository(
        root, "typed", "typed", max_batch_size=8, max_queue_delay_ms=0.0, fmt="pt2"
    )
    cnn = write_model_repository(
        root, "cnn", "cnn", max_batch_size=4, max_queue_delay_ms=1.0, fmt="pt2", sha256=True
    )
    # Fixed (non-adaptive) delay: concurrent requests are merged however fast each one runs.
    write_model_repository(
        root, "batched", "linear", max_batch_size=32, max_queue_delay_ms=50.0,
        adaptive_delay=False, fmt="torchscript",
    )  # fmt: skip
    return MainRepository(root, linear, typed, cnn)


MAX_BODY_BYTES = 1 << 20


@pytest.fixture(scope="session")
def main_server_max_body() -> int:
    return MAX_BODY_BYTES


@pytest.fixture(scope="session")
def main_server(
    main_repository: MainRepository, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("main-server") / "server.log"
    server = launch_server(main_repository.root, log, "--max-body-bytes", str(MAX_BODY_BYTES))
    yield server
    server.stop()
