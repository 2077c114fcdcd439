"""Which endpoint of a revision a request goes to: the less loaded of two picked at random.

Load is what the router knows of an endpoint: the requests it has sent there and not yet seen
answered, plus the queue depth the runtime reported on its last answer (header
`x-davit-queue-depth`: requests waiting for a batch slot, which other routers' requests add
to). Two random choices instead of a scan of all keep every pick O(1) and avoid the herd that
"always the least loaded" makes when many routers see the same figures (Mitzenmacher's power
of two choices); the runtime's own signal routes around an endpoint whose batcher is backed
up, the way the Gateway API inference extension's endpoint picker reads model-server queues.

Pure: `choose` takes the random source as an argument.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from davit_runtime.headers import QUEUE_DEPTH

QUEUE_DEPTH_HEADER = QUEUE_DEPTH.encode()


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    endpoint: str
    outstanding: int  # sent by this router, not answered yet
    queue_depth: int = 0  # as the endpoint last reported it

    @property
    def load(self) -> int:
        return self.outstanding + self.queue_depth


def choose(candidates: Sequence[EndpointLoad], rng: random.Random) -> str | None:
    """The endpoint for the next request among `candidates` (the revision's endpoints that
    can take it: ready, not ejected); None when there is none. Of two distinct endpoints
    drawn at random, the one with less load; on a tie the first drawn."""
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0].endpoint
    first, second = rng.sample(range(len(candidates)), 2)
    a, b = candidates[first], candidates[second]
    return b.endpoint if b.load < a.load else a.endpoint


def parse_queue_depth(value: str | bytes | None) -> int:
    """The header's value as a count; 0 for a missing or malformed one (an older runtime, or
    another server behind the router: then only the router's own count steers)."""
    if value is None:
        return 0
    try:
        depth = int(value)
    except ValueError:
        return 0
    return max(depth, 0)
