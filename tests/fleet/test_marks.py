"""Done markers against a real redis-server: the marker is the ID's hash as an integer, each
hour's table grows one set at a time and keeps every set an intset, and nothing marked is
forgotten as it grows; the marker sets of older versions are read, and such a version still
runs beside the tables."""

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
#: The IDs of ``ARGV[2:]`` found in the live tables (and sets) of the indexes ``KEYS`` at
#: ``ARGV[1]``.
_FOUND = (
    FIND
    + "local live, out = tables(KEYS[1], KEYS[2], ARGV[1]), {}"
    + " for i = 2, #ARGV do if marked(live, ARGV[i]) then out[#out + 1] = ARGV[i] end end"
    + " return out"
)


def _expected(job_id: str) -> str:
    """The first 64 bits of the ID's SHA-1, its top bit cleared, in decimal."""
    return str(int(hashlib.sha1(job_id.encode()).hexdigest()[:16], 16) & (2**63 - 1))


async def test_a_marker_is_the_ids_sha1_as_a_positive_63_bit_integer(redis_url: str):
    """The Lua marker of 2,003 IDs of every shape equals the hash read as an integer: a
    decimal string Redis takes for an integer (no leading zero), whatever the digits."""
    ids = ["", "é", "x" * 1000] + [f"job-{i}" for i in range(2000)]
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, "marks") as fleet:
            script = (
                FIND
                + "local out = {} for i = 1, #ARGV do"
                + " out[i] = marker(redis.sha1hex(ARGV[i])) end return out"
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
            found = await fleet.redis.eval(
                _FOUND, keys=fleet.keys.marks, args=[now, *added, *others]
            )
    level, split = int(state["level"]), int(state["split"])
    assert sorted(sets) == sorted(f"{table}:{a}" for a in range(2**level + split))
    assert int(state["count"]) == sum(size for size, _ in sets.values()) == len(added)
    assert len(added) / len(sets) <= LOAD < len(added) / (len(sets) - 1)
    assert {encoding for _, encoding in sets.values()} == {"intset"}
    assert max(size for size, _ in sets.values()) <= 2 * LOAD + 64
    assert all(0 < ttl <= 3_600_000 for ttl in ttls)
    assert isinstance(found, list)
    assert sorted(map(str, found)) == sorted(added)


#: SUBMIT as versions before tables ran it (KEYS: state, jobs, epoch, counts, the index of
#: hex sets; it calls SISMEMBER on whatever that index holds).
_HEX_SUBMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('SET', KEYS[3], ARGV[2], 'NX')
local done = redis.call('ZRANGEBYSCORE', KEYS[5], now, '+inf')
local added = 0
for i = 3, #ARGV do
  local known = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
  local mark = (not known) and #done > 0 and string.sub(redis.sha1hex(ARGV[i]), 1, 16)
  for _, bucket in ipairs(done) do
    if known then break end
    known = redis.call('SISMEMBER', bucket, mark) == 1
  end
  if not known then
    local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'deadline', ARGV[1])
    redis.call('HSET', KEYS[1], ARGV[i], entry)
    added = added + 1
  end
end
return added
"""


async def test_marker_sets_from_before_tables_are_read_and_still_readable_by_that_version(
    redis_url: str, fleet_name: str
):
    """An hour's set of 16 hex digits a member (what versions before tables kept) still keeps
    its IDs from being queued again, and says them acknowledged; tables written beside it do
    not break a submit of that version, run beside this one or after it (it finds only sets
    where it looks)."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            keys = fleet.keys
            old = keys.hex_sets + ":480000"
            await fleet.redis.sadd(old, [hashlib.sha1(b"old-job").hexdigest()[:16]])
            await fleet.redis.zadd(keys.hex_sets, {old: int(time.time() * 1000) + 60_000})
            expiry = str(int(time.time() * 1000) + 60_000)
            await fleet.redis.eval(_ADD, keys=[keys.table(1)], args=[expiry, "new-done"])
            await fleet.redis.zadd(keys.tables, {keys.table(1): int(expiry)})
            assert await fleet.submit(["old-job", "new-done", "new-job"], None) == 1
            assert await fleet.job("old-job") == {"job_id": "old-job", "state": "acknowledged"}
            assert await fleet.job("new-done") == {"job_id": "new-done", "state": "acknowledged"}
            assert await fleet.job("never") is None
            hex_keys = [keys.state, keys.jobs, keys.epoch, keys.counts, keys.hex_sets]
            added = await fleet.redis.eval(
                _HEX_SUBMIT, keys=hex_keys, args=["", "e", "old-job", "other-job"]
            )
            assert added == 1
