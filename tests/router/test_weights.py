"""The revision picker: a smooth weighted round robin, exact over every round of picks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from davit_router.weights import Split, WeightedPicker, pick


def picks(split: Split, count: int, serving: frozenset[str] | None = None) -> list[str | None]:
    chosen = []
    for _ in range(count):
        revision, split = pick(split, serving)
        chosen.append(revision)
    return chosen


@dataclass(frozen=True)
class Case:
    reason: str
    weights: list[tuple[str, int]]
    count: int
    want: Sequence[str | None]  # the picks, in order
    serving: frozenset[str] | None = field(default=None)


CASES = [
    Case("one revision takes every request", [("stable", 100)], 3, ["stable"] * 3),
    # Spread, not bunched: the canary's one in ten comes once per round of ten.
    Case("90/10 gives the canary one pick in each ten", [("stable", 9), ("canary", 1)], 10,
         ["stable"] * 5 + ["canary"] + ["stable"] * 4),
    Case("50/50 alternates", [("stable", 50), ("canary", 50)], 4,
         ["stable", "canary", "stable", "canary"]),
    Case("a weight of 0 is never picked", [("stable", 100), ("canary", 0)], 3, ["stable"] * 3),
    Case("no weight at all picks nobody", [("stable", 0)], 2, [None, None]),
    # A revision that cannot serve (all its endpoints ejected, its breaker open) gives its
    # share to the others for as long as it cannot.
    Case("a revision that cannot serve is passed over", [("stable", 9), ("canary", 1)], 3,
         ["stable"] * 3, serving=frozenset({"stable"})),
    Case("nothing serving picks nobody", [("stable", 9), ("canary", 1)], 1, [None],
         serving=frozenset()),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.reason for c in CASES])
def test_pick(case: Case) -> None:
    assert picks(Split.of(case.weights), case.count, case.serving) == list(case.want)


SPLITS = [
    [("a", 90), ("b", 10)],
    [("a", 1), ("b", 2), ("c", 97)],
    [("a", 33), ("b", 67)],
    [("a", 5), ("b", 0), ("c", 95)],
]


@pytest.mark.parametrize("weights", SPLITS)
def test_every_round_is_exact(weights: list[tuple[str, int]]) -> None:
    """Over each run of sum(weights) picks, each revision gets exactly its weight: no drift."""
    total = sum(w for _, w in weights)
    chosen = picks(Split.of(weights), total * 20)
    for start in range(0, len(chosen), total):
        counts = Counter(chosen[start : start + total])
        assert {r: counts.get(r, 0) for r, _ in weights} == dict(weights)


def test_a_negative_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="canary: weight -1 is negative"):
        Split.of([("stable", 101), ("canary", -1)])


def test_new_weights_hold_exactly_from_the_next_round() -> None:
    picker = WeightedPicker([("stable", 90), ("canary", 10)])
    for _ in range(37):  # mid-round
        picker.pick()
    picker.set_weights([("stable", 50), ("canary", 50)])
    assert Counter(picker.pick() for _ in range(100)) == {"stable": 50, "canary": 50}
    assert picker.weights == (("stable", 50), ("canary", 50))
