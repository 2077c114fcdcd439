"""When has a process finished its burst of work? `quiet_since` is pure (CPU-time samples in, a
time out); `seconds_until_quiet` takes the samples, through a clock and a sleep it is given."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

# A process under this share of a core is idle: watch keep-alives and timers, not work.
IDLE_SHARE = 0.05
SAMPLE_INTERVAL_S = 0.25


def quiet_since(
    samples: Sequence[tuple[float, float]], *, window_s: float, max_share: float
) -> float | None:
    """The start of the first window of `window_s` seconds, ending at the last sample, in which
    the process used at most `max_share` of a core; None while it is still busy.

    `samples` are (monotonic time, CPU seconds used so far), oldest first. The answer is the time
    the work ended: the window's start, where the quiet began.
    """
    if len(samples) < 2:
        return None
    end_t, end_cpu = samples[-1]
    # The newest sample at least window_s before the end.
    start = next((s for s in reversed(samples) if end_t - s[0] >= window_s), None)
    if start is None:
        return None
    start_t, start_cpu = start
    share = (end_cpu - start_cpu) / (end_t - start_t)
    return start_t if share <= max_share else None


def seconds_until_quiet(
    cpu_seconds: Callable[[], float],
    *,
    since: float,
    window_s: float,
    limit_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Seconds from `since` (a `clock` time) until the process whose CPU time `cpu_seconds`
    reads went quiet: the start of the quiet window, not the later moment the window's end
    confirmed it, which would add `window_s` to every figure. `limit_s` if it never does."""
    samples: list[tuple[float, float]] = []
    while clock() - since < limit_s:
        samples.append((clock(), cpu_seconds()))
        quiet = quiet_since(samples, window_s=window_s, max_share=IDLE_SHARE)
        if quiet is not None:
            return quiet - since
        sleep(SAMPLE_INTERVAL_S)
    return limit_s
