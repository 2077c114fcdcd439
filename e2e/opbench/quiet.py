"""When has a process finished its burst of work? Pure: CPU-time samples in, a time out."""

from __future__ import annotations

from collections.abc import Sequence


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
