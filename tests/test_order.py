"""The suite's own order under xdist (tests/conftest.py): long tests first in each share."""

from __future__ import annotations

import pytest

from tests.conftest import long_first


@pytest.mark.parametrize(("count", "longs", "workers"), [(705, 9, 4), (10, 7, 3), (5, 0, 2)])
def test_each_share_starts_with_its_long_ones(count: int, longs: int, workers: int):
    """Worksteal's first shares, cut as it cuts them, each start with the long items dealt
    to it; nothing lost, nothing twice, the others in their order."""
    items = list(range(count))
    long = set(range(count - longs, count))  # last in collection, as the load tests are
    ordered = long_first(items, workers, long.__contains__)
    assert sorted(ordered) == items
    assert [i for i in ordered if i not in long] == [i for i in items if i not in long]
    shares, left = [], list(ordered)
    for k in range(workers):
        size = len(left) // (workers - k)
        shares.append(left[:size])
        left = left[size:]
    dealt = sorted(long)
    for k, share in enumerate(shares):
        mine = dealt[k::workers][: len(share)]
        assert share[: len(mine)] == mine
