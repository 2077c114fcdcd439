"""CPU and memory of a server's whole process tree (Triton and MLServer spawn children)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Usage:
    cpu_percent: float  # 100 = one core busy for the whole interval
    peak_rss_mb: float


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class TreeMonitor:
    """Samples the tree every `interval_s` between start() and stop()."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._first_cpu: dict[int, float] = {}
        self._last_cpu: dict[int, float] = {}
        self._peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started_at = 0.0
        self._stopped_at = 0.0

    def _sample(self) -> None:
        rss = 0
        for process in _tree(self._pid):
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    rss += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            cpu = times.user + times.system
            self._first_cpu.setdefault(process.pid, cpu)
            self._last_cpu[process.pid] = cpu
        self._peak_rss = max(self._peak_rss, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        self._started_at = psutil.time.monotonic()
        self._sample()
        self._thread.start()

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._stopped_at = psutil.time.monotonic()
        busy = sum(self._last_cpu[pid] - self._first_cpu[pid] for pid in self._last_cpu)
        wall = max(self._stopped_at - self._started_at, 1e-9)
        return Usage(cpu_percent=100.0 * busy / wall, peak_rss_mb=self._peak_rss / 2**20)
