"""Which shard a job lives in, and which shards a worker reads new jobs from.

A job's shard is a stable hash of its ID (CRC-32, the same in every process and version of
Python), so submit, record, cancel and ``status --job`` all find it. A worker reads the shards
that rendezvous hashing gives it over the live workers: each shard goes to the worker that
weighs most for it, and each worker also reads the one shard it weighs most for. Every shard
then has a reader while any worker lives (its top worker), and every worker reads at least
one shard; when workers join or leave, only the shards whose top worker changed move. Every
worker agrees without talking to the others, from the same list of live workers. (A worker
with room its own shards cannot fill reads the others' too: see ``_worker``.)
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable

#: The most shards a fleet may have: every worker renews a lease and runs a takeover pass in
#: each shard, so its Redis calls grow with the count.
MAX_SHARDS = 64


def shard_of(job_id: str, shards: int) -> int:
    """The shard of ``job_id`` in a fleet of ``shards`` shards."""
    return zlib.crc32(job_id.encode()) % shards


def _weight(worker: str, shard: int) -> bytes:
    return hashlib.blake2b(f"{worker}\0{shard}".encode(), digest_size=8).digest()


def served(worker: str, workers: Iterable[str], shards: int) -> frozenset[int]:
    """The shards ``worker`` reads new jobs from, among the live ``workers`` (itself counted
    whether listed or not)."""
    everyone = {*workers, worker}
    mine = {
        shard
        for shard in range(shards)
        if max(everyone, key=lambda w: (_weight(w, shard), w)) == worker
    }
    mine.add(max(range(shards), key=lambda shard: _weight(worker, shard)))
    return frozenset(mine)
