"""Done markers: what is left in Redis of an acknowledged job, so that its ID, submitted again
within ``--retention``, is not polled again; about 10 bytes a job.

A marker is the first 64 bits of the ID's SHA-1 with the top bit cleared (a positive 63-bit
number), written as a decimal integer: an ID of any length costs the same, and a false "done"
among 10 million markers and 10 million new IDs has a chance of about 1 in 100,000. Redis
keeps a set of integers as an intset, 8 bytes a member, while it holds at most
``set-max-intset-entries`` (512 by default); a set of strings costs 56-68 bytes a member (a
hash table's entry and string). So the markers of one hour's acknowledgements are spread over
as many small sets as keep each an intset, grown one set at a time by linear hashing (Litwin,
1980): a table (a hash: ``level``, ``split``, ``count``) and its sets ``TABLE:0`` to
``TABLE:(2^level + split - 1)``. A marker lives in set ``h mod 2^level``, or ``h mod
2^(level + 1)`` if that is below ``split``, where ``h`` is its last 9 decimal digits (exact in
Lua's doubles, and as evenly spread as the hash). When the table averages more than
:data:`LOAD` a set, set ``split`` is split in two and ``split`` moves on, so no set outgrows
about twice :data:`LOAD`.

The scripts use these as Lua text, put before their own.
"""

from __future__ import annotations

#: Markers a table holds per set before it grows by one set: a set not yet split in a round
#: holds up to twice this on average (384), 6.5 standard deviations under the intset's 512.
LOAD = 192

#: Lua: ``marker(hex)`` (of the ID whose SHA-1 is ``hex``, which the caller computes once),
#: ``address(mark, level, split)``, ``tables(index, hex_sets, now)`` (the live hours' tables
#: and older sets, read once per script) and ``marked(tables, id)``.
FIND = """
local function marker(hex)
  -- Base 10^7 digits, least significant first: exact in a double at every step.
  local digits = {0}
  for k = 1, 16, 4 do
    local carry = tonumber(string.sub(hex, k, k + 3), 16)
    if k == 1 then carry = carry % 32768 end
    for j = 1, #digits do
      local v = digits[j] * 65536 + carry
      digits[j] = v % 10000000
      carry = math.floor(v / 10000000)
    end
    if carry > 0 then digits[#digits + 1] = carry end
  end
  local out = string.format('%d', digits[#digits])
  for j = #digits - 1, 1, -1 do out = out .. string.format('%07d', digits[j]) end
  return out
end
local function address(mark, level, split)
  local h = tonumber(string.sub(mark, -9))
  local a = h % 2 ^ level
  if a < split then a = h % 2 ^ (level + 1) end
  return string.format('%d', a)
end
local function tables(index, hex_sets, now)
  local out = {}
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', index, now, '+inf')) do
    local t = redis.call('HMGET', key, 'level', 'split')
    out[#out + 1] = {key, tonumber(t[1]) or 0, tonumber(t[2]) or 0}
  end
  -- Sets of 16 hex digits a member, from versions before tables: read until they expire.
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', hex_sets, now, '+inf')) do
    out[#out + 1] = {key, -1, 0}
  end
  return out
end
local function marked(live, id)
  if #live == 0 then return false end
  local hex = redis.sha1hex(id)
  local mark = marker(hex)
  for _, t in ipairs(live) do
    local found
    if t[2] < 0 then
      found = redis.call('SISMEMBER', t[1], string.sub(hex, 1, 16))
    else
      found = redis.call('SISMEMBER', t[1] .. ':' .. address(mark, t[2], t[3]), mark)
    end
    if found == 1 then return true end
  end
  return false
end
"""

#: Lua (after :data:`FIND`): ``Table(key, expiry)``, whose ``add(id)`` marks a job done, its
#: sets split as it grows, and ``close()`` saves the table and sets every key's expiry.
ADD = (
    f"""
local LOAD = {LOAD}
"""
    + """
local function Table(key, expiry)
  local t = redis.call('HMGET', key, 'level', 'split', 'count')
  local self = {level = tonumber(t[1]) or 0, split = tonumber(t[2]) or 0,
                count = tonumber(t[3]) or 0, touched = {}}
  local function grow()
    local stays = string.format('%d', self.split)
    local from = key .. ':' .. stays
    local to = key .. ':' .. string.format('%d', self.split + 2 ^ self.level)
    local moved = {}
    for _, mark in ipairs(redis.call('SMEMBERS', from)) do
      if address(mark, self.level + 1, 0) ~= stays then
        moved[#moved + 1] = mark
      end
    end
    if #moved > 0 then
      redis.call('SREM', from, unpack(moved))
      redis.call('SADD', to, unpack(moved))
      self.touched[to] = true
    end
    self.split = self.split + 1
    if self.split == 2 ^ self.level then self.level, self.split = self.level + 1, 0 end
  end
  function self.add(id)
    local mark = marker(redis.sha1hex(id))
    local set = key .. ':' .. address(mark, self.level, self.split)
    self.count = self.count + redis.call('SADD', set, mark)
    self.touched[set] = true
    while self.count > LOAD * (2 ^ self.level + self.split) do grow() end
  end
  function self.close()
    redis.call('HSET', key, 'level', self.level, 'split', self.split, 'count', self.count)
    redis.call('PEXPIREAT', key, expiry)
    for set in pairs(self.touched) do redis.call('PEXPIREAT', set, expiry) end
  end
  return self
end
"""
)
