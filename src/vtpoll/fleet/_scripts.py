"""The fleet's state in Redis: its keys, and the Lua scripts that change it atomically.

A fleet's jobs are spread over its shards (see ``_shards``), each shard's keys sharing one hash
tag: ``vt:{NAME}:...`` for shard 0 (the one layout of a fleet from before shards, which is a
fleet of one shard), ``vt:{NAME:S}:...`` for shard S >= 1. A script touches the keys of one
shard only, so it runs in one slot of a Redis Cluster. What belongs to the whole fleet (its
shard count, the pause, the rate limit, the one acknowledging reader) lives in shard 0's tag.
A script is one atomic step: submit (an ID is queued once), record (a result is
written once, by the job's owner), cancel, ack (results written out leave Redis), take over (a
dead worker's jobs change hands), lease (a worker proves it is alive, or learns it was
fenced), reserve (the fleet's rate limit hands out the next slots).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtpoll.fleet._marks import ADD, FIND

#: The consumer group every worker reads the jobs stream in.
GROUP = "pollers"


#: Characters a fleet's name cannot hold: braces would end its hash tag early, and a colon
#: would let fleet "a:1" share the keys of fleet "a"'s shard 1.
NAME_BREAKERS = "{}:"


def check_name(fleet: str) -> str:
    """The fleet's name, or ValueError naming what breaks its keys' hash tag."""
    if not fleet:
        raise ValueError("--fleet must not be empty")
    bad = sorted({c for c in fleet if c in NAME_BREAKERS})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ValueError(
            f"--fleet {fleet!r}: a fleet's name cannot hold {shown} (its keys' hash tag"
            " is made of it)"
        )
    return fleet


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one shard of a fleet; shard 0's also hold what is the whole fleet's."""

    fleet: str
    shard: int = 0

    @property
    def tag(self) -> str:
        """The hash tag every key of this shard shares."""
        return f"{{{self.fleet}}}" if self.shard == 0 else f"{{{self.fleet}:{self.shard}}}"

    def _key(self, name: str) -> str:
        return f"vt:{self.tag}:{name}"

    @property
    def shards(self) -> str:
        """String (shard 0): the fleet's shard count, fixed by its first submit."""
        return self._key("shards")

    @property
    def jobs(self) -> str:
        """Stream: one entry per job to poll (``id``, ``deadline``), read by the group."""
        return self._key("jobs")

    @property
    def state(self) -> str:
        """Hash: job ID -> its entry in the jobs stream while it waits or is polled, then
        ``done:`` and its entry in the results stream, until its result is acknowledged;
        makes submit and record idempotent, and finds a job for ``status --job``."""
        return self._key("state")

    @property
    def counts(self) -> str:
        """Hash: jobs ``submitted``, ``recorded`` and ``acked`` (their results acknowledged and
        removed), for status: the streams and the state shrink as results are acknowledged."""
        return self._key("counts")

    @property
    def tables(self) -> str:
        """Sorted set: the done-marker tables alive (one an hour), scored by their expiry (ms)."""
        return self._key("marks")

    @property
    def hex_sets(self) -> str:
        """Sorted set: the done-marker sets of versions before tables (``done:HOUR``, 16 hex
        digits a member), scored by their expiry (ms): read, never written, until they expire.
        Apart from :attr:`tables`, so that such a version, run beside this one or after it,
        finds only sets there."""
        return self._key("done")

    @property
    def marks(self) -> list[str]:
        """Where done markers are looked for: :attr:`tables`, :attr:`hex_sets` (the scripts'
        KEYS in that order)."""
        return [self.tables, self.hex_sets]

    def table(self, index: int) -> str:
        """Hash, with its sets ``TABLE:0``, ``TABLE:1``, ...: the done markers of the jobs
        acknowledged in the hour ``index`` (hours since the epoch), which keep a resubmitted ID
        from being polled again (see ``_marks``). The table and its sets expire
        ``--retention`` after its hour."""
        return self._key(f"marks:{index}")

    @property
    def results(self) -> str:
        """Stream: one entry per finished job (``id``, ``record``: the JSON line)."""
        return self._key("results")

    @property
    def epoch(self) -> str:
        """String: a random token written by the fleet's first submit (the same in every
        shard: each keeps its own, in its own slot). Gone or changed, the shard's state was
        lost (Redis wiped, restarted without persistence): workers and readers that saw
        another say so rather than take the empty state for a done fleet."""
        return self._key("epoch")

    @property
    def acker(self) -> str:
        """String (shard 0), with a time to live: the token of the one ``results --ack``
        reading now."""
        return self._key("acker")

    @property
    def room(self) -> str:
        """Hash: worker name -> the jobs it had room for at its last renewal."""
        return self._key("room")

    @property
    def paused(self) -> str:
        """String (shard 0), present while the fleet is paused: workers take no new jobs."""
        return self._key("paused")

    @property
    def workers(self) -> str:
        """Sorted set: worker name scored by its lease's expiry, Redis time in ms."""
        return self._key("workers")

    @property
    def rate(self) -> str:
        """String (shard 0): the rate limit's next free slot (GCRA theoretical arrival time, ms)."""
        return self._key("rl:tat")

    @property
    def pause(self) -> str:
        """String (shard 0): no request before this instant (ms), set from a 429's Retry-After."""
        return self._key("rl:pause")

    @property
    def quota(self) -> str:
        """String (shard 0): the server's declared quota (requests/s), lowering the fleet's rate."""
        return self._key("rl:quota")


#: Lua shared by several scripts, put before their own text.
#: Redis's clock in whole ms, as leases are scored by it.
NOW_MS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""
#: A job's end: its result appended, its state pointed at it (the caller counts them).
FINISH = """
local function finish(state, results, id, record)
  local result = redis.call('XADD', results, '*', 'id', id, 'record', record)
  redis.call('HSET', state, id, 'done:' .. result)
end
"""


#: KEYS: shards, epoch (both shard 0's). ARGV: the shard count to write if the fleet has none
#: ("" to write none). The count is written once, by the fleet's first submit, and never
#: changed; the epoch carries it too (token/N), should its key be lost; a fleet with an epoch
#: without a count is a fleet from before shards: one shard. Returns the count, or nil if the
#: fleet has none.
SHARDS = """
local n = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
if (not n) and epoch then n = string.match(epoch, '/(%d+)$') or '1' end
if (not n) and ARGV[1] ~= '' then
  n = ARGV[1]
  redis.call('SET', KEYS[1], n)
end
return n
"""

#: KEYS: workers. The workers whose lease is alive, by Redis's clock.
LIVE = (
    NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""
)

#: KEYS: state, jobs, epoch, counts, tables, hex sets. ARGV: deadline (epoch s, or ""), a new epoch
#: token, then the IDs. An ID is new unless the state or a live done-marker table has it (the
#: tables share the shard's hash tag). The epoch is written if the fleet has none; returns
#: {how many IDs were new, the epoch}.
SUBMIT = (
    NOW_MS
    + FIND
    + """
redis.call('SET', KEYS[3], ARGV[2], 'NX')
local done = tables(KEYS[5], KEYS[6], now)
local added = 0
for i = 3, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 and not marked(done, ARGV[i]) then
    local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'deadline', ARGV[1])
    redis.call('HSET', KEYS[1], ARGV[i], entry)
    added = added + 1
  end
end
redis.call('HINCRBY', KEYS[4], 'submitted', added)
return {added, redis.call('GET', KEYS[3])}
"""
)

#: KEYS: state, results, jobs, counts. ARGV: group, worker, then (job ID, entry ID, record)
#: triples.
#: Fenced: a result is written only by the entry's owner in the group (ownership changes only
#: by a takeover, atomically, so it is the fencing token); any other (a worker frozen past its
#: lease whose jobs were taken over) is dropped, the entry left to its owner. Each result is
#: written once, however often its job was polled. Returns {new, stale}.
RECORD = (
    FINISH
    + """
local new, stale = 0, 0
for i = 3, #ARGV, 3 do
  local id, entry, record = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local owner = redis.call('XPENDING', KEYS[3], ARGV[1], entry, entry, 1)[1]
  if not owner or owner[2] ~= ARGV[2] then
    stale = stale + 1
  else
    if string.sub(redis.call('HGET', KEYS[1], id) or '', 1, 5) ~= 'done:' then
      finish(KEYS[1], KEYS[2], id, record)
      new = new + 1
    end
    redis.call('XACK', KEYS[3], ARGV[1], entry)
    redis.call('XDEL', KEYS[3], entry)
  end
end
redis.call('HINCRBY', KEYS[4], 'recorded', new)
return {new, stale}
"""
)

#: KEYS: state, jobs, results, counts. ARGV: group, then (job ID, record) pairs. A job not
#: done yet is cancelled: its entry leaves the group and the stream (a worker polling it has
#: its result dropped: the entry is no longer its), and ``record`` is its result. Returns, per
#: job, 1 cancelled, 0 done already, -1 unknown to the fleet.
CANCEL = (
    FINISH
    + """
local out, cancelled = {}, 0
for i = 2, #ARGV, 2 do
  local id, record = ARGV[i], ARGV[i + 1]
  local state = redis.call('HGET', KEYS[1], id)
  if not state then
    out[#out + 1] = -1
  elseif string.sub(state, 1, 5) == 'done:' then
    out[#out + 1] = 0
  else
    redis.call('XACK', KEYS[2], ARGV[1], state)
    redis.call('XDEL', KEYS[2], state)
    finish(KEYS[1], KEYS[3], id, record)
    cancelled = cancelled + 1
    out[#out + 1] = 1
  end
end
redis.call('HINCRBY', KEYS[4], 'recorded', cancelled)
return out
"""
)

#: KEYS: acker. ARGV: token, ms, "hold" or "free". One ``results --ack`` at a time (two would
#: remove each other's unread results): hold takes or renews the key for ``token`` (1), or
#: finds another's (0); free gives it up if it is ``token``'s.
ACKER = """
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == 'free' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS: state, results, counts, tables, the table of this hour. ARGV: the table's expiry
#: (ms; 0 keeps no marker), then (result entry ID, job ID) pairs. Results written out are
#: removed, and each job's state cut to a marker in the hour's table. Returns how many.
ACK = (
    NOW_MS
    + FIND
    + ADD
    + """
local acked = 0
local marks = ARGV[1] ~= '0' and Table(KEYS[5], ARGV[1])
for i = 2, #ARGV, 2 do
  if redis.call('XDEL', KEYS[2], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
    if marks then marks.add(ARGV[i + 1]) end
    acked = acked + 1
  end
end
if acked > 0 and marks then
  marks.close()
  redis.call('ZADD', KEYS[4], ARGV[1], KEYS[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
end
redis.call('HINCRBY', KEYS[3], 'acked', acked)
return acked
"""
)

#: KEYS: tables, hex sets. ARGV: a job ID. 1 if a live done marker has it, else 0.
MARKED = (
    NOW_MS
    + FIND
    + """
return marked(tables(KEYS[1], KEYS[2], now), ARGV[1]) and 1 or 0
"""
)

#: KEYS: workers, epoch, room. ARGV: worker, lease ms, "join" or "renew", the epoch the worker
#: saw ("" for none yet), the jobs it has room for ("" if it does not say). Returns {the
#: lease's expiry (ms), the epoch}: expiry -1 when renewing a lease that is gone (the worker
#: was fenced: taken over, and must stop), -2 when the epoch the worker saw is gone or changed
#: (the fleet's state was lost).
LEASE = (
    NOW_MS
    + """
local epoch = redis.call('GET', KEYS[2])
if ARGV[4] ~= '' and epoch ~= ARGV[4] then
  return {-2, epoch}
end
if ARGV[3] == 'renew' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {-1, epoch}
end
local expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
if ARGV[5] and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
end
return {expiry, epoch}
"""
)

#: KEYS: workers, jobs, room. ARGV: group, me, most entries to claim (the caller's free room).
#: Only a caller whose own lease is live takes anything: one whose lease ran out was out of
#: touch too (Redis frozen, a network cut), and the others' leases may have run out for the
#: same reason; it renews first. Every other consumer of the group that holds entries while
#: its lease has expired, or has none at all (a fenced worker that read once more before it
#: noticed), has them claimed by ``me`` with their fields (the original deadline kept), at most
#: ``me``'s share of them (all such entries over the live workers that had room at their last
#: renewal): a dead worker's jobs spread over the live ones rather than going to whichever
#: passes first, and full workers do not slow the spreading. A victim is removed from the
#: lease set at its first job claimed (fenced: its renewal fails), and from the group once it
#: owns nothing; so is any expired worker that owns nothing. Jobs a worker handed back as it
#: stopped (its lease set to 0) are claimed with their delivery counts unchanged. Returns a
#: flat list: entry ID, job ID, deadline, times delivered (this claim included unless handed
#: back), entry ID, ...
TAKEOVER = (
    NOW_MS
    + """
local out = {}
local mine = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not mine) or tonumber(mine) < now then
  return out
end
local summary = redis.call('XPENDING', KEYS[2], ARGV[1])
local holders, victims, orphaned = {}, {}, 0
if summary[4] then
  for _, c in ipairs(summary[4]) do
    holders[c[1]] = true
    local lease = redis.call('ZSCORE', KEYS[1], c[1])
    if c[1] ~= ARGV[2] and ((not lease) or tonumber(lease) < now) then
      -- A lease of 0: the worker handed its jobs back as it stopped (see Worker.leave).
      victims[#victims + 1] = {c[1], tonumber(c[2]), lease and tonumber(lease) == 0}
      orphaned = orphaned + tonumber(c[2])
    end
  end
end
local live = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if tonumber(redis.call('HGET', KEYS[3], worker) or '1') > 0 then live = live + 1 end
end
live = math.max(1, live)
local budget = math.min(tonumber(ARGV[3]), math.ceil(orphaned / live))
for _, held in ipairs(victims) do
  if budget <= 0 then break end
  local victim, graceful = held[1], held[3]
  local pending = redis.call('XPENDING', KEYS[2], ARGV[1], '-', '+', budget, victim)
  local claimed, deliveries = {}, {}
  for _, p in ipairs(pending) do
    if graceful then
      -- Handed back, not lost: the delivery count stays (a job is dead-lettered for workers
      -- that stopped holding it, not for rolling restarts).
      deliveries[p[1]] = p[4]
      local one = redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, p[1], 'RETRYCOUNT', p[4])
      claimed[#claimed + 1] = one[1]
    else
      deliveries[p[1]] = p[4] + 1
    end
  end
  if not graceful and #pending > 0 then
    local ids = {}
    for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
    claimed = redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, unpack(ids))
  end
  for _, entry in ipairs(claimed) do
    if entry and entry[2] then
      local f = {}
      for j = 1, #entry[2], 2 do f[entry[2][j]] = entry[2][j + 1] end
      out[#out + 1] = entry[1]
      out[#out + 1] = f['id']
      out[#out + 1] = f['deadline'] or ''
      out[#out + 1] = deliveries[entry[1]]
    end
  end
  if #pending >= held[2] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[1], victim)
    redis.call('ZREM', KEYS[1], victim)
    redis.call('HDEL', KEYS[3], victim)
    holders[victim] = nil
  elseif not graceful then
    -- Fenced from its first job taken: its next renewal fails, and it stops.
    redis.call('ZREM', KEYS[1], victim)
  end
  budget = budget - #pending
end
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if victim ~= ARGV[2] and not holders[victim] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[1], victim)
    redis.call('ZREM', KEYS[1], victim)
    redis.call('HDEL', KEYS[3], victim)
  end
end
return out
"""
)

#: KEYS: rate, pause, quota. ARGV: rate (requests/s), burst, slots. Reserves the fleet's next
#: ``slots`` request slots, one interval apart (GCRA, never denying: the caller waits), and
#: returns {the wait for the first, in ms; the interval, in ms}.
RESERVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local rate = tonumber(ARGV[1])
local quota = tonumber(redis.call('GET', KEYS[3]) or '')
if quota and quota < rate then rate = quota end
local interval = 1000 / rate
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(tat, now - (tonumber(ARGV[2]) - 1) * interval, pause)
local last = slot + tonumber(ARGV[3]) * interval
redis.call('SET', KEYS[1], tostring(last), 'PX', math.ceil(last - now) + 60000)
return {tostring(math.max(0, slot - now)), tostring(interval)}
"""

#: KEYS: pause, quota. ARGV: pause seconds ("" for none), declared quota ("" for none).
#: A 429's Retry-After pauses every worker; a declared quota lowers the fleet's rate.
THROTTLED = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
if ARGV[1] ~= '' then
  local until_ms = now + tonumber(ARGV[1]) * 1000
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if until_ms > current then
    redis.call('SET', KEYS[1], tostring(until_ms), 'PX', math.ceil(until_ms - now) + 1000)
  end
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', 60)
end
return 1
"""
