-- index_add: add (or re-add) a session to its user's index, scored by Redis's clock in
-- ms, so that every app server ages entries by the same clock.
--
-- KEYS[1]  the user's index (a sorted set; the only key touched)
-- ARGV[1]  the session's member (its key without the prefix)
--
-- Reply    the score given

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
