"""Done markers against a real redis-server: the marker is the ID's hash as an integer, each
hour's table grows one set at a time and keeps every set an intset, and nothing marked is
forgotten as it grows."""

from __future__ import annotations

import hashlib
import time

import trio

from vtpoll.fleet._marks import ADD, FIND, LOAD
from vtpoll.fleet._redis import Fleet, open_fleet

GUARD = 20.0
#: Adds ``ARGV[2:]`` to the table ``KEYS[1]``, expiring at ``ARGV[1]`` (ms).
_ADD = (
    FIND
    + ADD
    + "local t = Table(KEYS[1], ARGV[1]) for i = 2, #ARGV do t.add(ARGV[i]) end t.close()"
)
#: The IDs of ``ARGV[2:]`` found in the live tables of the index ``KEYS[1]`` at ``ARGV[1]``.
_FOUND = (
    FIND
    + "local live, out = tables(KEYS[1], ARGV[1]), {}"
    + " for i = 2, #ARGV do if marked(live, ARGV[i]) then out[#out + 1] = ARGV[i] end end"
    + " return out"
)


def _expected(job_id: str) -> str:
    """The first 63 bits of the ID's SHA-1, in decimal."""
    return str(int(hashlib.sha1(job_id.encode()).hexdigest()[:16], 16) & (2**63 - 1))


async def test_a_marker_is_the_first_63_bits_of_the_ids_sha1(redis_url: str):
    """The Lua marker of 2,000 IDs of every shape equals the hash read as an integer: a
    decimal string Redis takes for an integer (no leading zero), whatever the digits."""
    ids = ["", "é", "x" * 1000] + [f"job-{i}" for i in range(2000)]
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, "marks") as fleet:
            script = (
                FIND + "local out = {} for i = 1, #ARGV do out[i] = marker(ARGV[i]) end return out"
            )
            got = await fleet.redis.eval(script, keys=[], args=ids)
    assert isinstance(got, list)
    assert [str(mark) for mark in got] == [_expected(i) for i in ids]


async def _sets(fleet: Fleet, table: str) -> dict[str, tuple[int, str]]:
    """Each set of ``table``: its size and encoding."""
    out = {}
    async for key in fleet.redis.scan_iter(match=f"{table}:*"):
        out[str(key)] = (await fleet.redis.scard(key), str(await fleet.redis.object_encoding(key)))
    return out


async def test_a_table_grows_a_set_at_a_time_keeps_intsets_and_forgets_nothing(
    redis_url: str, fleet_name: str
):
    """40,000 markers added 1,000 at a time to one hour's table: it ends with about one set per
    LOAD of them, every set an intset of at most 512, the table's count exact, every key
    expiring with the table; every ID added is found, and of 20,000 others none."""
    added = [f"done-{i}" for i in range(40_000)]
    others = [f"new-{i}" for i in range(20_000)]
    expiry = int(time.time() * 1000) + 3_600_000
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            table, index = fleet.keys.table(1), fleet.keys.tables
            for k in range(0, len(added), 1000):
                await fleet.redis.eval(_ADD, keys=[table], args=[str(expiry), *added[k : k + 1000]])
            await fleet.redis.zadd(index, {table: expiry})
            sets = await _sets(fleet, table)
            state = await fleet.redis.hgetall(table)
            ttls = [await fleet.redis.pttl(key) for key in [table, *sets]]
            now = str(int(time.time() * 1000))
            found = await fleet.redis.eval(_FOUND, keys=[index], args=[now, *added, *others])
    level, split = int(state["level"]), int(state["split"])
    assert sorted(sets) == sorted(f"{table}:{a}" for a in range(2**level + split))
    assert int(state["count"]) == sum(size for size, _ in sets.values()) == len(added)
    assert len(added) / len(sets) <= LOAD < len(added) / (len(sets) - 1)
    assert {encoding for _, encoding in sets.values()} == {"intset"}
    assert max(size for size, _ in sets.values()) <= 2 * LOAD + 64
    assert all(0 < ttl <= 3_600_000 for ttl in ttls)
    assert isinstance(found, list)
    assert sorted(map(str, found)) == sorted(added)


async def test_a_marker_set_from_before_tables_is_read_until_it_expires(
    redis_url: str, fleet_name: str
):
    """An hour's set of 16 hex digits a member (what versions before tables kept) still keeps
    its IDs from being queued again, and says them acknowledged."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            old = fleet.keys.tables.removesuffix(":done") + ":done:480000"
            await fleet.redis.sadd(old, [hashlib.sha1(b"old-job").hexdigest()[:16]])
            await fleet.redis.zadd(fleet.keys.tables, {old: int(time.time() * 1000) + 60_000})
            assert await fleet.submit(["old-job", "new-job"], None) == 1
            assert await fleet.job("old-job") == {"job_id": "old-job", "state": "acknowledged"}
            assert await fleet.job("never") is None
