"""Reaching the fleet's Redis: the URL checked, the server checked (a Redis, new enough), the
scripts registered, and every call retried through a short loss of the connection.

coredis runs on anyio, so this is native under trio. Its own retry policy is off: a command
sent twice could add a stream entry twice. Ours retries scripts that are idempotent (see
``_scripts``) and reads; a group read that failed may still have run, which the worker mends
(``Worker._adopt_own``), and a takeover is not retried at all.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import anyio
import coredis
import coredis.exceptions
import coredis.retry
from coredis.connection import TCPLocation
from coredis.pool import SentinelConnectionPool
from coredis.response.types import StreamPendingExt

from . import _scripts
from ._scripts import Keys, check_name
from ._shards import MAX_SHARDS, shard_of

T = TypeVar("T")
#: A fleet's connection: to one Redis, or to a Redis Cluster through one of its nodes.
Client = coredis.Redis[str] | coredis.RedisCluster[str]

#: Redis Streams with consumer groups exist since 5.0; the fleet is tested from 6.2 (the
#: oldest redis-server it ships tests against) and needs nothing newer than that.
MIN_VERSION = (6, 2)
#: Through Redis Sentinel: redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE,
#: the sentinels' addresses and the monitored service; the client follows its failovers.
SENTINEL = "redis+sentinel"
#: Seconds a call keeps retrying while Redis does not answer, before the fleet gives up (a
#: command's; a worker waits longer, see ``_worker.OUTAGE_PATIENCE``).
RECONNECT_FOR = 10.0
#: What is retried: no connection (a Redis loading its data says so too: BusyLoadingError), no
#: reply in time, a replica that is read-only until promoted, a blocked read ended by the
#: primary turning replica (a failover: UNBLOCKED, nothing read), through Sentinel no sentinel
#: naming a primary or the one named not (yet) a primary, a cluster slot moving.
RETRIED = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    coredis.exceptions.ReadOnlyError,
    coredis.exceptions.UnblockedError,
    coredis.exceptions.SentinelError,
    coredis.exceptions.TryAgainError,
    coredis.exceptions.ClusterDownError,
)
#: Refusals retried that coredis has no class for: MASTERDOWN, and a script's write refused on
#: a replica, which Redis 6 reports as the script's error ("Error running script ...: -READONLY
#: You can't write against a read only replica."), not as READONLY.
RETRIED_REPLIES = ("MASTERDOWN", "READONLY")
#: Longest wait for one reply (a blocking read adds its own block time).
REPLY_TIMEOUT = 10.0
SCHEMES = ("redis", "rediss", "unix", SENTINEL)
#: Shards a worker renews its lease in at once: a renewal takes about one round trip whatever
#: the shard count (64 in sequence, on a loaded machine, came late for a short lease), within
#: the pool's room beside the readers (see ``_client``).
LEASES_AT_ONCE = 16
#: Seconds of acknowledgements that share one done-marker table (and expire together).
BUCKET = 3600
#: IDs per submit script call.
SUBMIT_CHUNK = 1000


class FleetError(Exception):
    """Redis cannot be used: unreachable, not a Redis, too old, a bad URL. One line."""


class StateLost(FleetError):
    """The fleet's epoch is gone or changed since this process saw it: Redis lost the
    fleet's state (wiped, or restarted without persistence)."""

    def __init__(self, fleet: str, why: str) -> None:
        super().__init__(
            f"the fleet's state was lost: {why} (Redis wiped, or restarted without"
            f" persistence?); submit fleet {fleet!r} again to start it afresh"
        )


def check_url(url: str) -> str:
    """The URL, or :class:`FleetError` naming what is wrong with it."""
    if url.startswith(f"{SENTINEL}://"):
        sentinel_parts(url)
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise FleetError(f"--redis {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise FleetError(
            f"--redis {url!r} must be a redis://, rediss://, unix:// or redis+sentinel:// URL "
            "(redis://localhost:6379, unix:///run/redis.sock, redis+sentinel://HOST:26379/SERVICE)"
        )
    if parts.scheme == "unix" and not parts.path:
        raise FleetError(f"--redis {url!r} names no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise FleetError(f"--redis {url!r} names no host")
    return url


class SentinelURL(NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str
    username: str | None
    password: str | None


def sentinel_parts(url: str) -> SentinelURL:
    """A ``redis+sentinel://`` URL's parts, or :class:`FleetError` naming what is wrong."""
    rest = url.removeprefix(f"{SENTINEL}://")
    credentials, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise FleetError(f"--redis {url!r}: each sentinel must be HOST:PORT, not {host!r}")
        sentinels.append((name, int(port)))
    service = path.split("/")[0]
    if not service:
        raise FleetError(f"--redis {url!r} names no service (redis+sentinel://HOST:PORT/SERVICE)")
    return SentinelURL(sentinels, service, username or None, password or None)


class Claimed(NamedTuple):
    """An entry a worker holds: read, resumed or taken over."""

    entry: str
    job_id: str
    #: The submitter's deadline (epoch seconds), "" for none.
    deadline: str
    #: Times the entry was delivered to a worker, this one included.
    deliveries: int
    #: The shard whose jobs stream holds the entry.
    shard: int = 0

    @classmethod
    def of(
        cls, entry: str, fields: Mapping[Any, Any], deliveries: int = 1, shard: int = 0
    ) -> Claimed:
        """From the entry's fields (``id``, ``deadline``)."""
        return cls(entry, str(fields["id"]), str(fields.get("deadline", "")), deliveries, shard)


class Fleet:
    """One fleet's keys and scripts on one Redis connection pool. ``keys`` are shard 0's,
    which also hold what is the whole fleet's; the steps of one job go to its shard."""

    def __init__(self, redis: Client, keys: Keys, url: str, *, cluster: bool = False) -> None:
        self.redis, self.keys, self.url = redis, keys, url
        self.cluster = cluster
        #: The fleet's shard count, None until its first submit fixed it (see
        #: :meth:`load_shards`).
        self.shards: int | None = None
        #: Seconds a call retries while Redis is away (see :meth:`call`).
        self.patience = RECONNECT_FOR
        #: When a call last failed (see :meth:`call`).
        self.troubled_at = -math.inf
        #: Each shard's epoch as this process first saw it (absent before then).
        self.epochs: dict[int, str] = {}
        #: Through Sentinel, the primary this fleet's calls last went to (see :meth:`_moved`).
        self._primary: TCPLocation | None = None
        register = self.redis.register_script
        self._shards = register(_scripts.SHARDS)
        self._live = register(_scripts.LIVE)
        self._submit = register(_scripts.SUBMIT)
        self._record = register(_scripts.RECORD)
        self._lease = register(_scripts.LEASE)
        self._takeover = register(_scripts.TAKEOVER)
        self._reserve = register(_scripts.RESERVE)
        self._throttled = register(_scripts.THROTTLED)
        self._ack = register(_scripts.ACK)
        self._cancel = register(_scripts.CANCEL)
        self._acker = register(_scripts.ACKER)
        self._marked = register(_scripts.MARKED)

    async def call(self, make: Callable[[], Awaitable[T]], *, retry: bool = True) -> T:
        """``await make()``, retried with backoff while Redis cannot be reached, is loading
        its data, or is a replica not yet promoted (a failover), for up to ``patience``
        seconds; then :class:`FleetError`. Without ``retry``, the first failure is one.
        A call that failed may still have run (a reply lost, a command left on its
        connection): ``troubled_at`` says when one last failed, for those who must check."""
        deadline = anyio.current_time() + self.patience
        delay = 0.05
        while True:
            try:
                result = await make()
            except RETRIED as exc:
                self.troubled_at = anyio.current_time()
                if not retry or anyio.current_time() + delay > deadline:
                    raise FleetError(f"Redis at {self.url} does not answer: {exc}") from None
            except coredis.exceptions.ResponseError as exc:
                if not _retried_reply(str(exc)):
                    raise
                self.troubled_at = anyio.current_time()
                if not retry or anyio.current_time() + delay > deadline:
                    raise FleetError(f"Redis at {self.url} cannot serve: {exc}") from None
            else:
                self._moved()
                return result
            await anyio.sleep(delay)
            delay = min(1.0, delay * 2)

    def _moved(self) -> None:
        """Through Sentinel, the connections going to another primary than before (a failover,
        seen by a new connection or by :meth:`follow_primary`) count as a failed call: writes
        the old primary took after the promotion are lost, and on the new primary the other
        workers' leases may have run out meanwhile."""
        pool = self.redis.connection_pool
        if not isinstance(pool, SentinelConnectionPool) or pool.location == self._primary:
            return
        if self._primary is not None:
            self.troubled_at = anyio.current_time()
        self._primary = pool.location

    async def follow_primary(self, within: float) -> None:
        """Through Sentinel, move to the primary the sentinels name, if it changed. Until then
        the connections stay with the old one, which after a failover may still serve for
        seconds (a sentinel reconfigures a primary that is up only some seconds after the
        promotion), taking writes that are lost. Sentinels not answering ``within`` seconds
        (down, frozen): no change, and no longer a wait (a lease is renewed after this)."""
        pool = self.redis.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return
        with anyio.move_on_after(within), suppress(coredis.exceptions.SentinelError):
            await pool.get_primary_location()  # a new primary: the old one's connections closed
        self._moved()

    @property
    def count(self) -> int:
        """The shards to look in: the fleet's count, or 1 before its first submit (when no
        shard holds anything)."""
        return self.shards or 1

    def shard(self, shard: int) -> Keys:
        """The keys of one of the fleet's shards."""
        return self.keys if shard == 0 else Keys(self.keys.fleet, shard)

    def shard_of(self, job_id: str) -> int:
        return shard_of(job_id, self.count)

    def _by_shard(self, items: list[T], job_id: Callable[[T], str]) -> dict[int, list[int]]:
        """The positions of ``items`` in each shard, in order, by their job IDs."""
        positions: dict[int, list[int]] = {}
        for k, item in enumerate(items):
            positions.setdefault(self.shard_of(job_id(item)), []).append(k)
        return positions

    async def load_shards(
        self, wanted: int | None = None, default: int | None = None
    ) -> int | None:
        """The fleet's shard count, None before its first submit. The first submit writes
        ``wanted``, else ``default``; a count the fleet has is never changed:
        :class:`FleetError` if ``wanted`` differs."""
        first = wanted or default
        keys, args = [self.keys.shards, self.keys.epoch], ["" if first is None else str(first)]
        stored: str | None = await self.call(partial(self._shards, keys=keys, args=args))
        if stored is None:
            return None
        count = int(str(stored))
        if wanted is not None and count != wanted:
            raise FleetError(
                f"fleet {self.keys.fleet!r} has {count} shards, fixed at its first submit:"
                f" --shards {wanted} cannot change that"
            )
        self.shards = count
        return count

    async def ensure_group(self) -> None:
        """The consumer group of each shard's jobs stream, made if missing."""
        for shard in range(self.count):
            # identifier "0", a string: coredis reads the integer 0 as "$" (the stream's end).
            create = partial(
                self.redis.xgroup_create,
                self.shard(shard).jobs,
                _scripts.GROUP,
                identifier="0",
                mkstream=True,
            )
            with suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
                await self.call(create)

    async def submit(
        self, ids: list[str], deadline: float | None, shards: int | None = None
    ) -> int:
        """Queue each ID the fleet does not have yet, each in its shard, ``SUBMIT_CHUNK`` per
        script call (one call is atomic and blocks Redis while it runs); how many were new.
        The first submit fixes the fleet's shard count (``shards``; 1 on one Redis, none
        assumed on a cluster: :class:`FleetError`) and writes its epoch in every shard."""
        if await self.load_shards(shards, default=None if self.cluster else 1) is None:
            raise FleetError(
                f"fleet {self.keys.fleet!r} is new and {self.url} is a node of a Redis Cluster:"
                " give its first submit --shards N (the fleet's keys spread over N hash tags,"
                " so over the cluster's nodes)"
            )
        await self.ensure_group()
        # The count rides in the epoch too (token/N): were the count's key lost alone, the
        # fleet is not taken for one from before shards (one shard) while others hold jobs.
        stamp = "" if deadline is None else repr(deadline)
        token = f"{secrets.token_hex(8)}/{self.count}"
        positions = self._by_shard(ids, str)
        added = 0
        for shard in range(self.count):
            keys = self.shard(shard)
            mine = [ids[k] for k in positions.get(shard, [])]
            for start in range(0, max(1, len(mine)), SUBMIT_CHUNK):
                args = [stamp, token, *mine[start : start + SUBMIT_CHUNK]]
                reply: list[Any] = await self.call(
                    partial(
                        self._submit,
                        keys=[keys.state, keys.jobs, keys.epoch, keys.counts, *keys.marks],
                        args=args,
                    )
                )
                self._saw(shard, str(reply[1]))
                added += int(reply[0])
        return added

    def _saw(self, shard: int, epoch: str | None) -> None:
        """The epoch a shard has now, compared with the one this process saw first."""
        seen = self.epochs.get(shard)
        if seen is not None and epoch != seen:
            why = "its epoch is " + ("gone" if epoch is None else "new")
            raise StateLost(self.keys.fleet, why if shard == 0 else f"{why} in shard {shard}")
        if epoch is not None:
            self.epochs[shard] = epoch

    async def check_epoch(self) -> None:
        """:class:`StateLost` if a shard's epoch changed since this process saw it, or if a
        shard has none while it holds state (a worker recorded into a wiped Redis)."""
        for shard in range(self.count):
            keys = self.shard(shard)
            epoch = await self.call(partial(self.redis.get, keys.epoch))
            if epoch is None and shard and self.epochs.get(0) is not None:
                # The first submit writes every shard's epoch: one gone while shard 0 has its
                # own is a shard whose state was lost (a cluster node that lost its data).
                raise StateLost(self.keys.fleet, f"its epoch is gone in shard {shard}")
            if epoch is None and shard not in self.epochs:
                # Lengths, not keys: a worker started before the first submit makes the
                # (empty) jobs stream for its group.
                held = await self.call(partial(self.redis.hlen, keys.state))
                held += await self.call(partial(self.redis.xlen, keys.results))
                held += await self.call(partial(self.redis.xlen, keys.jobs))
                if held:
                    raise StateLost(self.keys.fleet, "it has jobs or results but no epoch")
            self._saw(shard, None if epoch is None else str(epoch))

    async def record(self, worker: str, batch: list[tuple[str, str, str]]) -> tuple[int, int]:
        """Record ``batch`` (job ID, entry, JSON line) as ``worker``, each in its job's shard:
        how many results were new, and how many were stale (``worker`` no longer owns their
        entries)."""
        new = stale = 0
        for shard, positions in self._by_shard(batch, lambda item: item[0]).items():
            args: list[str] = [_scripts.GROUP, worker]
            for k in positions:
                args += batch[k]
            keys = self.shard(shard)
            script = partial(
                self._record, keys=[keys.state, keys.results, keys.jobs, keys.counts], args=args
            )
            try:
                counts: list[int] = await self.call(script)
            except coredis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.check_epoch()
                raise StateLost(self.keys.fleet, "its consumer group is gone") from None
            new, stale = new + int(counts[0]), stale + int(counts[1])
        return new, stale

    async def ack(self, written: list[tuple[str, str]], retention: float, shard: int = 0) -> int:
        """Remove results written out ((result entry, job ID) pairs) of ``shard``, keeping a
        done marker of each job for ``retention`` seconds after the hour it was acknowledged
        in (0: none); how many were removed."""
        hour = int(time.time() // BUCKET)
        expiry = 0 if retention <= 0 else math.ceil(((hour + 1) * BUCKET + retention) * 1000)
        at = self.shard(shard)
        keys = [at.state, at.results, at.counts, at.tables, at.table(hour)]
        args = [str(expiry)] + [value for pair in written for value in pair]
        acked: int = await self.call(lambda: self._ack(keys=keys, args=args))
        return acked

    async def acker(self, token: str, *, hold: bool, ttl: float = 30.0) -> bool:
        """Take or renew (``hold``) the one acknowledging reader's place for ``token``, for
        ``ttl`` seconds: False if another holds it. Not ``hold``: give it up."""
        args = [token, str(math.ceil(ttl * 1000)), "hold" if hold else "free"]
        said: int = await self.call(lambda: self._acker(keys=[self.keys.acker], args=args))
        return bool(said)

    async def cancel(self, records: list[tuple[str, str]]) -> list[int]:
        """Cancel jobs not done yet, each recorded with its (job ID, record) line: per job, 1
        cancelled, 0 done already, -1 unknown."""
        out = [0] * len(records)
        for shard, positions in self._by_shard(records, lambda pair: pair[0]).items():
            keys = self.shard(shard)
            args = [_scripts.GROUP] + [value for k in positions for value in records[k]]
            said: list[int] = await self.call(
                partial(
                    self._cancel,
                    keys=[keys.state, keys.jobs, keys.results, keys.counts],
                    args=args,
                )
            )
            for k, one in zip(positions, said, strict=True):
                out[k] = int(one)
        return out

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """Where a job is: queued, in progress (with whom, delivered how often), done (its
        result), acknowledged (its marker kept); None if the fleet does not know it."""
        redis, keys = self.redis, self.shard(self.shard_of(job_id))
        state = await self.call(lambda: redis.hget(keys.state, job_id))
        if state is None:
            marked = partial(self._marked, keys=keys.marks, args=[job_id])
            if await self.call(marked):
                return {"job_id": job_id, "state": "acknowledged"}
            return None
        state = str(state)
        if state.startswith("done:"):
            rid = state.removeprefix("done:")
            found = await self.call(lambda: redis.xrange(keys.results, rid, rid))
            record = json.loads(str(found[0].field_values["record"])) if found else None
            return {"job_id": job_id, "state": "done", "result": record}
        held = await self.call(
            lambda: redis.xpending(keys.jobs, _scripts.GROUP, start=state, end=state, count=1)
        )
        for p in held if isinstance(held, tuple) else ():
            if isinstance(p, StreamPendingExt):
                return {
                    "job_id": job_id,
                    "state": "in progress",
                    "worker": str(p.consumer),
                    "deliveries": int(p.delivered),
                }
        return {"job_id": job_id, "state": "queued"}

    async def pause(self, paused: bool) -> None:
        """Workers take no new jobs while the fleet is paused (they keep the ones they hold)."""
        if paused:
            await self.call(lambda: self.redis.set(self.keys.paused, "1"))
        else:
            await self.call(lambda: self.redis.delete([self.keys.paused]))

    async def is_paused(self) -> bool:
        return bool(await self.call(lambda: self.redis.exists([self.keys.paused])))

    async def lease(
        self, worker: str, ttl: float, *, join: bool, room: int | None = None, shard: int = 0
    ) -> int:
        """Take or renew ``worker``'s lease in ``shard``, saying how many jobs it has ``room``
        for: its expiry (Redis time, ms), or -1 if a renewed lease was gone (the worker was
        fenced); :class:`StateLost` if the shard's epoch changed."""
        mode = "join" if join else "renew"
        said = "" if room is None else str(room)
        args = [worker, str(math.ceil(ttl * 1000)), mode, self.epochs.get(shard, ""), said]
        at = self.shard(shard)
        keys = [at.workers, at.epoch, at.room]
        reply: list[Any] = await self.call(partial(self._lease, keys=keys, args=args))
        expiry, epoch = reply
        self._saw(shard, epoch if epoch is None else str(epoch))
        return int(expiry)

    async def leases(
        self, worker: str, ttl: float, *, join: bool, room: int | None = None
    ) -> list[int]:
        """:meth:`lease` in every shard, :data:`LEASES_AT_ONCE` at a time: the expiries, by
        shard. An error in a shard is raised as itself (the first, if several)."""
        expiries = [0] * self.count
        limit = anyio.CapacityLimiter(LEASES_AT_ONCE)

        async def one(shard: int) -> None:
            async with limit:
                expiries[shard] = await self.lease(worker, ttl, join=join, room=room, shard=shard)

        try:
            async with anyio.create_task_group() as tg:
                for shard in range(self.count):
                    tg.start_soon(one, shard)
        except ExceptionGroup as group:
            first: BaseException = group
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return expiries

    async def live_workers(self) -> list[str]:
        """The workers whose lease in shard 0 is alive (every worker holds one in each
        shard)."""
        live: list[Any] = await self.call(partial(self._live, keys=[self.keys.workers]))
        return [str(name) for name in live]

    async def take_over(self, worker: str, most: int, shard: int = 0) -> list[Claimed]:
        at = self.shard(shard)
        keys = [at.workers, at.jobs, at.room]
        args = [_scripts.GROUP, worker, str(most)]
        # Not retried: a takeover that timed out may have run, and one retried once Redis is
        # back may land before the other workers renew the leases that ran out meanwhile.
        script = partial(self._takeover, keys=keys, args=args)
        flat: list[Any] = await self.call(script, retry=False)
        return [
            Claimed(str(flat[i]), str(flat[i + 1]), str(flat[i + 2]), int(flat[i + 3]), shard)
            for i in range(0, len(flat), 4)
        ]

    async def own(
        self, worker: str, count: int, first: str = "-", last: str = "+", shard: int = 0
    ) -> dict[str, int]:
        """The entries ``worker`` holds in the group of ``shard``, from ``first`` to ``last``,
        the first ``count`` of them: how often each was delivered."""
        read = partial(
            self.redis.xpending,
            self.shard(shard).jobs,
            _scripts.GROUP,
            start=first,
            end=last,
            count=count,
            consumer=worker,
        )
        found = await self.call(read)
        if not isinstance(found, tuple):
            return {}
        return {
            str(p.identifier): int(p.delivered) for p in found if isinstance(p, StreamPendingExt)
        }

    async def entry(self, entry: str, shard: int = 0) -> dict[str, str] | None:
        """An entry's fields (job ID, deadline) in ``shard``, None if it is gone."""
        found = await self.call(partial(self.redis.xrange, self.shard(shard).jobs, entry, entry))
        if not found:
            return None
        return {str(k): str(v) for k, v in found[0].field_values.items()}

    async def reserve(self, rate: float, burst: int, slots: int = 1) -> tuple[float, float]:
        """Reserve the fleet's next ``slots`` request slots: seconds to wait for the first,
        and seconds between them."""
        keys = [self.keys.rate, self.keys.pause, self.keys.quota]
        args = [repr(rate), str(burst), str(slots)]
        reply: list[str] = await self.call(lambda: self._reserve(keys=keys, args=args))
        return float(reply[0]) / 1000, float(reply[1]) / 1000

    async def throttled(self, pause: float | None, quota: float | None) -> None:
        args = ["" if pause is None else repr(pause), "" if quota is None else repr(quota)]
        await self.call(lambda: self._throttled(keys=[self.keys.pause, self.keys.quota], args=args))


@asynccontextmanager
async def open_fleet(url: str, name: str) -> AsyncIterator[Fleet]:
    """The fleet ``name`` on the Redis at ``url``, checked; :class:`FleetError` if it cannot
    be used. A node of a Redis Cluster is detected (``cluster_enabled``), and the cluster is
    reached through it. The fleet's shard count is read (None before its first submit). An
    error inside the block comes out as itself, not in an exception group."""
    check_url(url)
    try:
        check_name(name)
    except ValueError as exc:
        raise FleetError(str(exc)) from None
    try:
        async with _client(url, cluster=False) as redis:
            fleet = Fleet(redis, Keys(name), url)
            cluster = await _check_server(fleet)
            if not cluster:
                await fleet.load_shards()
                yield fleet
        if cluster:
            async with _client(url, cluster=True) as redis:
                fleet = Fleet(redis, Keys(name), url, cluster=True)
                await fleet.load_shards()
                yield fleet
    except BaseExceptionGroup as group:
        # coredis's pool runs a task group: what ends the block arrives wrapped in it.
        raise _single(group) from None


@asynccontextmanager
async def _client(url: str, *, cluster: bool) -> AsyncIterator[Client]:
    options: dict[str, Any] = {
        "decode_responses": True,
        "stream_timeout": REPLY_TIMEOUT,
        "connect_timeout": 2.0,
        "retry_policy": coredis.retry.NoRetryPolicy(),
    }
    # A worker's reader of each shard holds a connection through its blocking read: the pool
    # must leave room beside them for leases, takeovers and records (at the default of 64,
    # or the cluster client's 32, a worker reading every shard of a large fleet waited
    # seconds for each renewal, and never took over).
    pool: dict[str, Any] = {"max_connections": 2 * MAX_SHARDS + 16}
    if url.startswith(f"{SENTINEL}://"):
        named = sentinel_parts(url)
        sentinel: coredis.Sentinel[str] = coredis.Sentinel(
            [TCPLocation(host, port) for host, port in named.sentinels],
            sentinel_kwargs={"connect_timeout": 2.0, "stream_timeout": REPLY_TIMEOUT},
            username=named.username,
            password=named.password,
            **options,
        )
        primary: coredis.Redis[str] = sentinel.primary_for(named.service, **pool)
        async with sentinel, primary:
            yield primary
        return
    try:
        client: Client
        if cluster:
            # Through the node named (from_url warns of a deprecated way to name it).
            parts = urlsplit(url)
            client = coredis.RedisCluster(
                startup_nodes=[TCPLocation(parts.hostname or "", parts.port or 6379)],
                username=parts.username,
                password=parts.password,
                ssl=parts.scheme == "rediss",
                **options,
                **pool,
            )
        else:
            client = coredis.Redis.from_url(url, **options, **pool)
    except ValueError as exc:
        raise FleetError(f"--redis {url!r} is not a valid URL: {exc}") from None
    async with client:
        yield client


def _retried_reply(reply: str) -> bool:
    """Whether an error reply is one of ``RETRIED_REPLIES``, itself or as a script's error."""
    return reply.startswith(RETRIED_REPLIES) or any(
        f"-{code} " in reply for code in RETRIED_REPLIES
    )


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


async def _check_server(fleet: Fleet) -> bool:
    """Whether the server is a node of a Redis Cluster; :class:`FleetError` if it cannot serve
    a fleet."""
    try:
        info = await fleet.redis.info("server")
    except coredis.exceptions.ConnectionError as exc:
        if isinstance(exc.__cause__, OSError):  # refused, no such socket, no route
            raise FleetError(f"cannot reach Redis at {fleet.url}: {exc.__cause__}") from None
        raise FleetError(f"{fleet.url} does not answer as Redis does ({exc})") from None
    except (coredis.exceptions.RedisError, TimeoutError) as exc:
        raise FleetError(f"{fleet.url} does not answer as Redis does ({exc!r})") from None
    version = str(info.get("redis_version", "0"))
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise FleetError(f"Redis at {fleet.url} is version {version}; the fleet needs {wanted}+")
    cluster = await fleet.redis.info("cluster")
    return str(cluster.get("cluster_enabled", "0")) == "1"
