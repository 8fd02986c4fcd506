"""One fleet worker: takes jobs from the group as capacity allows, polls each with the library
(one client: the same scheduler, batches, long-polls and hints as ``watch``), records each
result once, keeps its lease alive, and takes over the jobs of workers whose lease expired.

Fencing is Redis's word, never the worker's own clock's: a worker is fenced when another took
over any of its jobs (which it may once its lease has expired); its next renewal then fails,
and it stops at once. What it had not recorded is polled again by the workers that took its
jobs, and recorded there: a result is written only by the job's current owner. A worker cut
off from Redis (an outage, a failover) keeps polling and retries its calls for
``OUTAGE_PATIENCE`` seconds; back in touch, it renews its lease, and takes over nobody's jobs
for a lease's length, time for the other workers to renew theirs. Through Sentinel, each
renewal first asks the sentinels for the primary: a failover whose old primary still serves
is followed within a third of a lease, and the move counts as such a cut (what the old
primary took meanwhile is lost: the worker polls again the entries it had recorded).

In a fleet of several shards, a worker holds a lease in every shard and runs its takeover
passes in every shard (a dead worker's jobs are spread wherever they are), but reads new jobs
from the shards rendezvous hashing gives it (``_shards.served``), recomputed from the live
workers at each renewal, and from the others' only while its own have none left for its room.
Holding every shard's lease keeps leases, fencing and takeover what they are in one shard (a
script sees one shard's keys), and leaves no moment when a worker holds jobs in a shard it has
no lease in as the shards it reads change; it costs a script call per shard every third and
every half of a lease.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
import coredis.exceptions
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from coredis import PureToken
from coredis.response.types import StreamEntry

from video_translation_client import JobResult, Outcome, VideoTranslationClient

from .._jobfile import record_line
from ._limiter import FleetRateLimiter
from ._metrics import EVERY as METRICS_EVERY
from ._metrics import WorkerMetrics
from ._redis import Claimed, Fleet, FleetError, StateLost
from ._scripts import GROUP
from ._shards import served

#: Results written to Redis in one script call, at most, and how long one waits for company.
RECORD_BATCH = 200
RECORD_WINDOW = 0.02
#: Most jobs taken from the group in one read, and claimed in one takeover pass.
TAKE_BATCH = 500
CLAIM_BATCH = 1000
#: Seconds a worker's calls keep retrying while Redis is away, before it stops (exit 2).
OUTAGE_PATIENCE = 120.0
#: A renewal this many leases after the last is late (due every third of a lease).
LATE = 0.5
#: Leases a renewal waits at most for the sentinels to name the primary (through Sentinel).
FOLLOW_FOR = 1 / 12
#: Deliveries of a job to workers, without a result, after which it is recorded failed.
MAX_DELIVERIES = 5
#: Milliseconds a read of the group blocks for new jobs; also how often the pause is looked
#: at (once a period per worker, however many shards it reads).
READ_BLOCK_MS = 1000
#: Longest wait, in seconds, between two sweeps of the others' shards that found nothing (it
#: doubles from READ_BLOCK_MS at each empty sweep): an idle fleet then costs each worker a
#: read per shard every few seconds, not every second.
STEAL_IDLE_MAX = 8.0
#: Seconds a worker stopping (a signal, or fenced) may take to hand its jobs back.
LEAVE_WITHIN = 5.0


class Fenced(Exception):
    """This worker's lease is gone: its jobs belong to others now."""


class DeadLetter(Exception):
    """A job delivered to workers too often without a result: each one that took it died or
    was fenced first (a job that crashes its poller, say). Recorded failed, not polled again."""


@dataclass(slots=True)
class WorkerStats:
    claimed: int = 0
    #: Entries this worker's name held when it started, polled again.
    resumed: int = 0
    recorded: int = 0
    #: Results dropped: their jobs were no longer this worker's (it was fenced), or recorded
    #: already (a reply lost, the batch sent again).
    stale: int = 0
    #: Jobs recorded failed for having been delivered too often (see :class:`DeadLetter`).
    dead_letters: int = 0
    #: Reads of new jobs put off (a second each) while the fleet was paused.
    paused_waits: int = 0
    #: Entries found held by this worker unknown to it (a call that ran, its reply lost).
    adopted: int = 0
    #: New jobs taken from shards this worker does not read by rendezvous, its own having
    #: none left while it had room.
    stolen: int = 0


class Worker:
    def __init__(
        self,
        fleet: Fleet,
        client: VideoTranslationClient,
        *,
        name: str,
        lease: float,
        capacity: int,
        limiter: FleetRateLimiter | None = None,
        max_deliveries: int = MAX_DELIVERIES,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.fleet = fleet
        fleet.patience = OUTAGE_PATIENCE
        self.max_deliveries = max_deliveries
        self.limiter = limiter
        self.client = client
        self.name = name
        self.lease = lease
        self.capacity = anyio.Semaphore(capacity)
        self._capacity = capacity
        self.metrics = metrics
        self.stats = WorkerStats()
        self._no_takeover_until = -math.inf
        #: (shard, entry) of the entries this worker polls or has yet to record: its own
        #: pending entries not among them (a read or a takeover that ran although its reply
        #: was lost) are adopted.
        self._held: set[tuple[int, str]] = set()
        #: The shards this worker reads new jobs from (see ``_shards.served``).
        self.serving: frozenset[int] = frozenset()
        #: Shards whose last read filled the room it asked for (a backlog there): while none
        #: it reads is so, it also takes new jobs from the others' shards (see :meth:`_steal`),
        #: so that a shard whose readers are full does not wait while this worker has room. A
        #: shard its room is too small to read (see :meth:`_share`) is not counted as one.
        self._backlogged: set[int] = set()
        self._checked_own_at = -math.inf
        #: Whether the last takeover pass was cut short by this worker's room: expired
        #: workers' jobs wait, and the room that frees goes to them before new jobs.
        self._owed = False
        #: Set once the entries this worker's name held at its start are resumed and a first
        #: takeover pass is made: then new jobs are read.
        self._resumed = anyio.Event()
        #: Whether the fleet was paused at the last look (see :meth:`_watch_pause`).
        self._paused = False
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, str, str]](
            RECORD_BATCH * 4
        )

    async def run(self) -> None:
        """Work until cancelled; raises :class:`Fenced` if the fleet took this worker's jobs,
        :class:`StateLost` if Redis lost the fleet's state. Before the fleet's first submit,
        waits for it (its shard count is not known until then)."""
        while await self.fleet.load_shards() is None:  # noqa: ASYNC110 - Redis, not a task
            await anyio.sleep(READ_BLOCK_MS / 1000)
        await self.fleet.ensure_group()
        await self._renew(join=True)
        await self._look_at_pause()  # before any read
        try:
            async with self.client, self._send, anyio.create_task_group() as tg:
                if self.limiter is not None:
                    tg.start_soon(self.limiter.publish)
                tg.start_soon(self._heartbeat)
                if self.metrics is not None:
                    tg.start_soon(self._snapshots, self.metrics)
                tg.start_soon(self._watch_pause)
                tg.start_soon(self._take_over, tg)
                tg.start_soon(self._record, self._receive)
                tg.start_soon(self._resume_then_read, tg)
        except* Fenced as fenced:
            # Fenced in one shard, it stops in all: what it holds in the others is handed
            # back now, rather than left there until its leases in them run out (renewed
            # in the same pass that found it fenced) and taken then.
            with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_WITHIN):
                await self.leave()
            raise fenced.exceptions[0] from None
        except* StateLost as lost:
            raise lost.exceptions[0] from None

    async def leave(self) -> None:
        """Hand this worker's jobs to the fleet now: its lease is set to 0, expired, so the next
        takeover pass of any worker claims them, their delivery counts unchanged (a handed
        back job is no delivery lost). Only where it still has a lease (XX): in a shard where
        it was fenced its jobs are being taken over already, counted as delivered."""
        for shard in range(self.fleet.count):
            workers = self.fleet.shard(shard).workers
            await self.fleet.redis.zadd(workers, {self.name: 0}, condition=PureToken.XX)

    async def _snapshots(self, metrics: WorkerMetrics) -> None:
        while True:
            held = self._capacity - self.capacity.value
            metrics.take(self.stats, held, self.client.statistics(), len(self.serving))
            await anyio.sleep(METRICS_EVERY)

    # -- lease -----------------------------------------------------------------------------------

    async def _renew(self, *, join: bool = False) -> None:
        """This worker's lease in every shard (renewed at once), then the shards it reads anew;
        through Sentinel, on the primary the sentinels name now (a failover is followed within
        a third of a lease, even while the old primary still serves)."""
        await self.fleet.follow_primary(within=self.lease * FOLLOW_FOR)
        expiries = await self.fleet.leases(
            self.name, self.lease, join=join, room=self.capacity.value
        )
        for shard, expiry in enumerate(expiries):
            if expiry < 0:
                raise Fenced(
                    f"worker {self.name}: its lease expired and its jobs were taken over"
                    + (f" in shard {shard} (it hands back those of the others)" if shard else "")
                )
        if self.fleet.count == 1:
            self.serving = frozenset({0})
        else:
            live = await self.fleet.live_workers()
            self.serving = served(self.name, live, self.fleet.count)

    async def _heartbeat(self) -> None:
        renewed = anyio.current_time()
        while True:
            await anyio.sleep(self.lease / 3)
            await self._renew()
            now = anyio.current_time()
            if now - renewed > LATE * self.lease:
                # This renewal came late: Redis was away or slow (or this process starved),
                # and the other workers' renewals too, so their leases may have run out in
                # Redis meanwhile. They renew within a third of a lease of its return.
                self._no_takeover_until = now + self.lease
            renewed = now

    # -- jobs ------------------------------------------------------------------------------------

    async def _resume_then_read(self, tg: TaskGroup) -> None:
        """The entries this worker's name holds already first, in every shard (a worker
        restarted under its name, by hand or by a container's restart, resumes them: no other
        worker takes over a name whose lease is alive), then new ones from the shards it
        reads, one reader each."""
        for shard in range(self.fleet.count):
            await self._resume(tg, shard)
        await self._take_over_pass(tg)  # expired workers' jobs before new ones
        self._resumed.set()
        for shard in range(self.fleet.count):
            tg.start_soon(self._read, tg, shard)
        if self.fleet.count > 1:
            tg.start_soon(self._steal, tg)

    async def _resume(self, tg: TaskGroup, shard: int) -> None:
        after = "0"
        delivered: dict[str, int] = {}
        while True:
            entries = await self._read_group(after, TAKE_BATCH, shard=shard)
            self._held.update((shard, str(entry.identifier)) for entry in entries)
            if entries:
                first, last = str(entries[0].identifier), str(entries[-1].identifier)
                delivered = await self.fleet.own(self.name, len(entries), first, last, shard)
            for entry in entries:
                await self.capacity.acquire()
                entry_id = str(entry.identifier)
                times = delivered.get(entry_id, 1)
                self._start(tg, Claimed.of(entry_id, entry.field_values, times, shard))
                self.stats.resumed += 1
            if len(entries) < TAKE_BATCH:
                return
            after = str(entries[-1].identifier)

    async def _look_at_pause(self) -> None:
        self._paused = await self.fleet.is_paused()
        if self._paused:
            self.stats.paused_waits += 1

    async def _watch_pause(self) -> None:
        """Whether the fleet is paused, looked at once a period for all the shards read (one
        look per shard cost an idle fleet of W workers and N shards W x N calls a second)."""
        while True:
            await anyio.sleep(READ_BLOCK_MS / 1000)
            await self._look_at_pause()

    async def _read(self, tg: TaskGroup, shard: int) -> None:
        """New jobs of ``shard`` while this worker reads it (see ``_shards.served``)."""
        while True:
            # Room is taken per entry read, not held through the blocking read: a takeover
            # pass meanwhile finds the room free.
            await self.capacity.acquire()
            self.capacity.release()
            mine = shard in self.serving and not self._paused and not self._owed
            room = self._share(shard) if mine else 0
            if not room:
                await anyio.sleep(READ_BLOCK_MS / 1000)
                continue
            entries = await self._read_group(">", room, block=READ_BLOCK_MS, shard=shard)
            self._held.update((shard, str(entry.identifier)) for entry in entries)
            # Fewer than asked for: no backlog here, the room may go to others' shards.
            if len(entries) < room:
                self._backlogged.discard(shard)
            else:
                self._backlogged.add(shard)
            for entry in entries:
                await self.capacity.acquire()
                self._start(tg, Claimed.of(str(entry.identifier), entry.field_values, 1, shard))

    def _share(self, shard: int) -> int:
        """The part of the free room the reader of ``shard`` asks for: the room split among the
        shards read, so that one busy shard does not fill it, and never more than it in all
        (were each to ask for one at least, a worker with one free place reading 20 shards
        would take 20 jobs). Left over places go to each shard in turn, a second each."""
        mine = sorted(self.serving)
        free, k = self.capacity.value, len(mine)
        turn = (mine.index(shard) + int(anyio.current_time())) % k
        return min(TAKE_BATCH, free // k + (turn < free % k))

    async def _steal(self, tg: TaskGroup) -> None:
        """New jobs of the others' shards, while every shard this worker reads has none left
        for its room: a sweep over them, starting at another shard each time, each read
        asking for no more than the room free (taken before the read: it does not block), so
        that a shard whose readers are full does not wait while this worker has room. Sweeps
        that find nothing come further apart, up to ``STEAL_IDLE_MAX``."""
        period = READ_BLOCK_MS / 1000
        wait, sweeps = period, 0
        while True:
            await anyio.sleep(wait)
            others = [s for s in range(self.fleet.count) if s not in self.serving]
            if not others or self._paused or self._owed or self.serving & self._backlogged:
                wait = period
                continue
            sweeps += 1
            start = sweeps % len(others)
            found = 0
            for shard in others[start:] + others[:start]:
                free, got = await self._into_room(tg, TAKE_BATCH, partial(self._new_jobs, shard))
                if not free:
                    break
                self.stats.stolen += got
                found += got
            wait = period if found else min(STEAL_IDLE_MAX, wait * 2)

    async def _new_jobs(self, shard: int, count: int) -> list[Claimed]:
        """Up to ``count`` new jobs of ``shard``, at once (the read does not block)."""
        entries = await self._read_group(">", count, shard=shard)
        return [
            Claimed.of(str(entry.identifier), entry.field_values, 1, shard) for entry in entries
        ]

    async def _into_room(
        self, tg: TaskGroup, most: int, fetch: Callable[[int], Awaitable[list[Claimed]]]
    ) -> tuple[int, int]:
        """Take up to ``most`` places of the free room, ``fetch`` that many jobs into them and
        start them, the places they did not fill given back (whatever the fetch raised):
        (places taken, jobs started)."""
        free = self._free(most)
        if not free:
            return 0, 0
        jobs: list[Claimed] = []
        try:
            jobs = await fetch(free)
        finally:
            for _ in range(free - len(jobs)):
                self.capacity.release()
        for job in jobs:
            self._start(tg, job)
        return free, len(jobs)

    async def _read_group(
        self, after: str, count: int, block: int | None = None, *, shard: int
    ) -> tuple[StreamEntry, ...]:
        """Entries of the group of ``shard`` for this worker: its own from ``after``, or new
        ones (">")."""
        redis, keys = self.fleet.redis, self.fleet.shard(shard)
        read = partial(
            redis.xreadgroup, GROUP, self.name, streams={keys.jobs: after}, count=count, block=block
        )
        try:
            got = await self.fleet.call(read)
        except coredis.exceptions.StreamConsumerGroupError:
            await self.fleet.check_epoch()
            raise StateLost(self.fleet.keys.fleet, "its consumer group is gone") from None
        return got[keys.jobs] if got else ()

    def _free(self, most: int) -> int:
        """Take up to ``most`` of the free room at once."""
        free = 0
        while free < most and self.capacity.value > 0:
            self.capacity.acquire_nowait()
            free += 1
        return free

    def _start(self, tg: TaskGroup, job: Claimed) -> None:
        """Poll a job this worker holds (its room taken), unless it was delivered too often:
        then it is recorded failed (its room given back at once)."""
        self._held.add((job.shard, job.entry))
        if job.deliveries <= self.max_deliveries:
            tg.start_soon(self._poll, job.entry, job.job_id, job.deadline)
            return
        self.capacity.release()
        self.stats.dead_letters += 1
        error = DeadLetter(
            f"delivered {job.deliveries} times without a result (more than"
            f" --max-deliveries {self.max_deliveries}): each worker that took it stopped first"
        )
        line = record_line(JobResult(job.job_id, Outcome.FAILED, None, error=error))
        tg.start_soon(self._send.send, (job.job_id, job.entry, line))

    async def _take_over(self, tg: TaskGroup) -> None:
        """The jobs of workers whose lease expired, as many as this worker has room for,
        every half lease (and once at the start, before new jobs are read); the takeover
        script gives each live worker its share of them. While a pass leaves some for want of
        room, they come first: new jobs are not read, and the room is taken for them as it
        frees (they are older, and their deadlines run; behind a backlog of new jobs they
        waited minutes)."""
        await self._resumed.wait()
        while True:
            if self._owed:
                await self.capacity.acquire()
                self.capacity.release()
            else:
                await anyio.sleep(self.lease / 2)
            await self._take_over_pass(tg)

    async def _take_over_pass(self, tg: TaskGroup) -> None:
        if self.fleet.troubled_at > self._checked_own_at:
            await self._adopt_own(tg)
        now = anyio.current_time()
        if now < max(self._no_takeover_until, self.fleet.troubled_at + self.lease):
            self._owed = False  # just back in touch with Redis: the others renew first
            return
        owed = False
        for shard in range(self.fleet.count):
            owed |= await self._take_over_in(tg, shard)
        self._owed = owed

    async def _take_over_in(self, tg: TaskGroup, shard: int) -> bool:
        """Take over in ``shard``; whether jobs may be left there for want of room: the room
        ran out while claims filled it, or there was none and some were left before."""
        filled = self._owed
        while True:
            free, got = await self._into_room(tg, CLAIM_BATCH, partial(self._expired_jobs, shard))
            if not free:
                return filled
            self.stats.claimed += got
            if got < free:
                return False
            filled = True

    async def _expired_jobs(self, shard: int, count: int) -> list[Claimed]:
        """Up to ``count`` jobs of workers whose lease expired in ``shard``, this worker's share."""
        try:
            return await self.fleet.take_over(self.name, count, shard)
        except FleetError:
            return []  # Redis away: the pass is dropped (see Fleet.take_over)

    async def _adopt_own(self, tg: TaskGroup) -> None:
        """After a call failed: poll this worker's own entries that it does not know of (a
        read or takeover whose reply was lost had taken them), else nobody ever would."""
        self._checked_own_at = anyio.current_time()
        for shard in range(self.fleet.count):
            for entry in await self.fleet.own(self.name, len(self._held) + TAKE_BATCH, shard=shard):
                if (shard, entry) in self._held:
                    continue
                fields = await self.fleet.entry(entry, shard)
                if fields is None:
                    continue
                self._held.add((shard, entry))
                self.stats.adopted += 1
                await self.capacity.acquire()
                # Its count says how often it was handed out, not that it was lost: polled.
                self._start(tg, Claimed.of(entry, fields, 1, shard))

    async def _poll(self, entry: str, job_id: str, deadline: str) -> None:
        try:
            local = None
            if deadline:
                local = anyio.current_time() + (float(deadline) - time.time())
            result = await self.client.poll_job(job_id, deadline=local)
            await self._send.send((job_id, entry, record_line(result)))
        finally:
            self.capacity.release()

    async def _record(self, receive: MemoryObjectReceiveStream[tuple[str, str, str]]) -> None:
        async with receive:
            while True:
                batch = [await receive.receive()]
                with anyio.move_on_after(RECORD_WINDOW):
                    while len(batch) < RECORD_BATCH:
                        batch.append(await receive.receive())
                new, stale = await self.fleet.record(self.name, batch)
                shard_of = self.fleet.shard_of
                self._held.difference_update((shard_of(job), entry) for job, entry, _ in batch)
                self.stats.recorded += new
                self.stats.stale += stale
