"""The suite's own order under xdist (tests/conftest.py): long tests first in each share, the
tests of a costly set-up together, in the shares pytest-xdist's worksteal hands out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from xdist.scheduler.worksteal import WorkStealingScheduling

from tests.conftest import long_first


class Worker:
    """What worksteal asks of a worker when it first hands out the tests."""

    shutting_down = False

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.share: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.share += indices


def shares(ordered: list[int], workers: int) -> list[list[int]]:
    """What each worker is first handed, by worksteal itself, in the order they came up."""
    config: Any = SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"])
    scheduler = WorkStealingScheduling(config)
    nodes = [Worker(f"gw{k}") for k in range(workers)]
    names = [str(i) for i in ordered]
    for node in nodes:
        scheduler.add_node(node)
    for node in nodes:
        scheduler.add_node_collection(node, names)
    scheduler.schedule()
    return [[ordered[i] for i in node.share] for node in nodes]


@pytest.mark.parametrize(("count", "longs", "workers"), [(705, 9, 4), (10, 7, 3), (5, 0, 2)])
def test_each_share_starts_with_its_long_ones(count: int, longs: int, workers: int):
    """Each share starts with the long items dealt to it; nothing lost, nothing twice, the
    others in their order."""
    items = list(range(count))
    long = set(range(count - longs, count))  # last in collection, as the load tests are
    ordered = long_first(items, workers, lambda i: i if i in long else None)
    assert sorted(ordered) == items
    assert [i for i in ordered if i not in long] == [i for i in items if i not in long]
    dealt = sorted(long)
    for k, share in enumerate(shares(ordered, workers)):
        mine = dealt[k::workers][: len(share)]
        assert share[: len(mine)] == mine


def test_a_units_items_start_one_share_together():
    """Items of one unit (a module's, whose set-up each process pays) head one share, one
    after another, among units of their own."""
    items = list(range(100))
    together = set(range(60, 72))

    def unit(i: int) -> object:
        return "together" if i in together else ("long", i) if i in (90, 95) else None

    ordered = long_first(items, 4, unit)
    assert sorted(ordered) == items
    heads = [share[:12] for share in shares(ordered, 4)]
    assert heads[0] == sorted(together)
    assert [h[0] for h in heads[1:3]] == [90, 95]


def test_units_larger_than_a_share_lose_nothing():
    """More to put at the heads than a share holds: every item still placed once."""
    items = list(range(21))
    together = set(range(3, 15))

    def unit(i: int) -> object:
        return "together" if i in together else ("long", i) if i >= 15 else None

    ordered = long_first(items, 4, unit)
    assert sorted(ordered) == items
