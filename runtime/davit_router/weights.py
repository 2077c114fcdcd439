"""Which revision a request goes to: a smooth weighted round robin over the revisions' weights.

Deterministic and exact: over any run of `sum(weights)` picks each revision gets exactly its
weight, and the picks are spread out (90/10 sends the canary one request in every ten, not ten
in a row), so a short window of traffic already has the split a rollout step asked for. No
randomness, so no drift for a small canary share over a few thousand requests.

Pure: `pick` returns a new `Split`; `WeightedPicker` only holds the current one. New weights (a
rollout step) start a fresh split: the new shares hold exactly from the next round, and no
revision is owed requests from the old one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Split:
    """The weights by revision, and each revision's running credit (the algorithm's state)."""

    weights: tuple[tuple[str, int], ...] = ()
    credit: tuple[int, ...] = ()

    @classmethod
    def of(cls, weights: Sequence[tuple[str, int]]) -> Split:
        """A fresh split; a negative weight is refused (zero means: no traffic)."""
        for revision, weight in weights:
            if weight < 0:
                raise ValueError(f"revision {revision}: weight {weight} is negative")
        return cls(tuple(weights), (0,) * len(weights))


def pick(split: Split, serving: Collection[str] | None = None) -> tuple[str | None, Split]:
    """The next revision, and the split after it; None when no revision with a weight above 0
    can serve. `serving` (default: all) are the revisions that can take a request now: one
    whose endpoints are all ejected, or whose breaker is open, is left out of this pick and
    its share goes to the others meanwhile (its credit waits, so it is not owed a burst when
    it is back)."""
    weights = [
        weight if serving is None or revision in serving else 0
        for revision, weight in split.weights
    ]
    total = sum(weights)
    if total == 0:
        return None, split
    credit = [c + w for c, w in zip(split.credit, weights, strict=True)]
    # The highest credit wins (the first of equals: deterministic); it pays the round's total.
    chosen = max((i for i, w in enumerate(weights) if w > 0), key=lambda i: (credit[i], -i))
    credit[chosen] -= total
    return split.weights[chosen][0], Split(split.weights, tuple(credit))


class WeightedPicker:
    """Holds the current split for the proxy; every decision is `pick`'s."""

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        self._split = Split.of(weights)

    @property
    def weights(self) -> tuple[tuple[str, int], ...]:
        return self._split.weights

    def pick(self, serving: Collection[str] | None = None) -> str | None:
        chosen, self._split = pick(self._split, serving)
        return chosen

    def set_weights(self, weights: Sequence[tuple[str, int]]) -> None:
        if tuple(weights) != self._split.weights:
            self._split = Split.of(weights)
