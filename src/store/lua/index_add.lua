-- index_add: add (or re-add) a session to its user's index, scored by Redis's clock in
-- ms, so that every app server ages entries by the same clock; and drop the entries
-- that are dead by that score alone: an entry is added no later than its session is
-- created or tied, so once the absolute lifetime and the grace (which allows for a
-- created_at ahead of Redis's clock) have passed since its score, its session has
-- ended, whatever became of it. A user who logs in again and again, and never lists
-- their sessions, keeps at most a lifetime of entries.
--
-- KEYS[1]  the user's index (a sorted set; the only key touched)
-- ARGV[1]  the session's member (its key without the prefix)
-- ARGV[2]  the layer's absolute lifetime in ms (0: none, and nothing is dropped)
-- ARGV[3]  the grace in ms
--
-- Reply    the score given

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lifetime = tonumber(ARGV[2])
if lifetime > 0 then
  -- ZRANGE and ZREM, which the documented ACL users have already; at most 100 per add.
  local cutoff = '(' .. string.format('%d', now - lifetime - tonumber(ARGV[3]))
  local dead = redis.call('ZRANGE', KEYS[1], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, 100)
  if #dead > 0 then redis.call('ZREM', KEYS[1], unpack(dead)) end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
