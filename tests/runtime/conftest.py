"""Fixtures for runtime tests: model repositories and real server processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from davit_runtime.testing import (
    ModelSpec,
    RunningServer,
    launch_server,
    write_model_repository,
)


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
