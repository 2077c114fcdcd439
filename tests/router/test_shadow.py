"""Which requests are copied to the shadow revision."""

from __future__ import annotations

import itertools

import pytest

from davit_router.shadow import mirrored


@pytest.mark.parametrize("percent", [0, 1, 10, 33, 50, 99, 100])
def test_every_hundred_requests_copy_exactly_the_percent(percent: int) -> None:
    for start in (0, 100, 700):
        assert sum(mirrored(n, percent) for n in range(start, start + 100)) == percent


def test_copies_are_spread_out_not_bunched() -> None:
    # 10 %: one in every ten, never two in a row.
    chosen = [n for n in range(100) if mirrored(n, 10)]
    assert [b - a for a, b in itertools.pairwise(chosen)] == [10] * 9
