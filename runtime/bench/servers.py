"""Starting, probing and stopping the servers under test.

Every server runs in its own process group (so the bench can stop the whole tree it started), on
127.0.0.1, with its output in a log file under the work directory. The bench process itself runs
inside a private network namespace (see run.py), which is what keeps KServe, which binds every
interface, on loopback.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.models import BenchModel
from bench.payloads import GRPC, HTTP_BINARY, HTTP_JSON
from bench.stats import metric_total

RUNTIME_DIR = Path(__file__).resolve().parent.parent
READY_LINE = re.compile(r"davit-runtime ready http=([\w.:\[\]]+):(\d+) grpc=([\w.:\[\]]+):(\d+)")

# Model name -> (batches, samples) totals so far; the bench diffs two readings.
BatchReader = Callable[[str], tuple[float, float]]


@dataclass
class RunningServer:
    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    transports: tuple[str, ...]
    log_path: Path
    batch_totals: BatchReader | None = None

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM to the group this bench started, then SIGKILL after the grace period."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Children left in the group (a stub that ignored SIGTERM) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def http_get(port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_http_ready(
    process: subprocess.Popen[bytes], port: int, path: str, timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
        status, _ = http_get(port, path, timeout_s=2.0)
        if status == 200:
            return
        time.sleep(0.5)
    raise TimeoutError(f"not ready after {timeout_s:.0f} s ({path}); see {log_path}")


def start_davit(
    repository: Path, threads: int, work_dir: Path, timeout_s: float = 180.0
) -> RunningServer:
    log_path = work_dir / "logs" / "davit.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    davit = Path(sys.executable).parent / "davit-runtime"
    cmd = [
        str(davit),
        "serve",
        "--model-repository",
        str(repository),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--host",
        "127.0.0.1",
        "--torch-threads",
        str(threads),
    ]
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    ports: list[int] = []
    ready = threading.Event()

    def pump() -> None:
        # Copies the server's output to its log and spots the ready line.
        assert process.stdout is not None
        with log_path.open("wb") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                match = READY_LINE.search(line.decode(errors="replace"))
                if match and not ready.is_set():
                    ports.extend([int(match.group(2)), int(match.group(4))])
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"davit-runtime did not become ready; see {log_path}")
    http_port, grpc_port = ports[0], ports[1]

    def batch_totals_for(model: str) -> tuple[float, float]:
        status, body = http_get(http_port, "/metrics")
        if status != 200:
            return math.nan, math.nan
        text = body.decode()
        labels = {"model": model}
        return (
            metric_total(text, "davit_batch_size_count", labels),
            metric_total(text, "davit_batch_size_sum", labels),
        )

    return RunningServer(
        name="davit",
        process=process,
        http_port=http_port,
        grpc_port=grpc_port,
        transports=(HTTP_JSON, HTTP_BINARY, GRPC),
        log_path=log_path,
        batch_totals=batch_totals_for,
    )


@dataclass(frozen=True)
class PeerSpec:
    name: str
    venv: str
    module: str
    transports: tuple[str, ...]
    port_base: int
    ready_timeout_s: float


PEERS = {
    "triton": PeerSpec(
        "triton",
        "pytriton",
        "bench.peers.pytriton_server",
        (HTTP_JSON, HTTP_BINARY, GRPC),
        18100,
        180.0,
    ),
    "kserve": PeerSpec(
        "kserve", "kserve", "bench.peers.kserve_server", (HTTP_JSON, HTTP_BINARY, GRPC), 18200, 120
    ),
    "mlserver": PeerSpec(
        "mlserver", "mlserver", "bench.peers.mlserver_server", (HTTP_JSON, GRPC), 18300, 180.0
    ),
}


def counter_reader(path: Path) -> BatchReader:
    def read(_model: str) -> tuple[float, float]:
        try:
            slots = np.frombuffer(path.read_bytes()[:16], dtype=np.int64)
        except FileNotFoundError:
            return math.nan, math.nan
        return float(slots[0]), float(slots[1])

    return read


def start_peer(
    spec: PeerSpec,
    venv_dir: Path,
    model: BenchModel,
    *,
    threads: int,
    max_batch_size: int,
    max_queue_delay_ms: float,
    work_dir: Path,
) -> RunningServer:
    peer_dir = work_dir / "peers" / spec.name
    peer_dir.mkdir(parents=True, exist_ok=True)
    counter_file = peer_dir / "batch-counter.bin"
    counter_file.unlink(missing_ok=True)
    log_path = work_dir / "logs" / f"{spec.name}-{model.name}.log"
    http_port, grpc_port, metrics_port = spec.port_base, spec.port_base + 1, spec.port_base + 2
    cmd = [
        str(venv_dir / "bin" / "python"),
        "-m",
        spec.module,
        "--model-file",
        str(model.model_file.resolve()),
        "--model-name",
        model.name,
        "--input-name",
        model.input.name,
        "--output-name",
        model.output.name,
        "--input-shape",
        ",".join(str(d) for d in model.input.shape),
        "--output-shape",
        ",".join(str(d) for d in model.output.shape),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--threads",
        str(threads),
        "--max-batch-size",
        str(max_batch_size),
        "--max-queue-delay-ms",
        str(max_queue_delay_ms),
        "--counter-file",
        str(counter_file),
        "--work-dir",
        str(peer_dir),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(RUNTIME_DIR),
        # PyTriton's Python backend stub must load this interpreter's libpython, not the
        # system one (BENCH-NOTES.md).
        "LD_LIBRARY_PATH": str(Path(sys.base_prefix) / "lib"),
    }
    process = _spawn(cmd, log_path, env)
    server = RunningServer(
        name=spec.name,
        process=process,
        http_port=http_port,
        grpc_port=grpc_port,
        transports=spec.transports,
        log_path=log_path,
        batch_totals=counter_reader(counter_file),
    )
    try:
        wait_http_ready(
            process, http_port, f"/v2/models/{model.name}/ready", spec.ready_timeout_s, log_path
        )
    except BaseException:
        server.stop(grace_s=5)
        raise
    return server
