-- end: end a session (logout, or a terminate from the session manager), leaving a
-- marker so that requests already in flight with its ID neither bring it back nor
-- create a session in its place, nor clear a cookie the browser may have replaced.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  why: 'destroyed' or 'terminated'
-- ARGV[2]  the marker's TTL in ms
--
-- Reply    1   a live session was ended
--          0   there was none (a marker is left in its place all the same, unless one
--              is there already, which is kept)

local key = KEYS[1]
local live = redis.pcall('HEXISTS', key, 'session_ttl')
if live ~= 1 and redis.pcall('HEXISTS', key, 'ended') == 1 then return 0 end
redis.call('DEL', key)
redis.pcall('HSET', key, 'ended', ARGV[1])
redis.call('PEXPIRE', key, ARGV[2])
if live == 1 then return 1 end
return 0
