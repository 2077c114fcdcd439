"""Latency histograms as the router counts them and the operator adds them up: the quantile of a
histogram, read the way Prometheus' histogram_quantile reads one (linear within the bucket that
holds it), so the router's figures, a sum of several routers' figures and a Prometheus query
over the runtime's buckets agree on the same traffic.

The standard library only: the operator's image (which carries this package's source but not
the router's dependencies) imports it to add up the router replicas' histograms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# How long a router keeps its answers' figures (figures.Ledger's horizon): a window that began
# longer ago cannot be read from it.
FIGURES_HORIZON_SECONDS = 600


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float]) -> float:
    """The q-quantile (0 < q < 1) of a histogram: `counts[i]` answers at most `bounds[i]`
    seconds (and above the previous bound); `counts[-1]` (one longer than bounds) those above
    the last bound. Linear within the bucket; NaN for an empty histogram; the last bound for
    a quantile above it (the histogram cannot say more)."""
    total = sum(counts)
    if total == 0:
        return math.nan
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i > 0 else 0.0
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]
