-- end: end a session (logout, or a terminate from the session manager), leaving a
-- marker so that requests already in flight with its ID neither bring it back nor
-- create a session in its place, nor clear a cookie the browser may have replaced.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  why: 'destroyed' or 'terminated'
-- ARGV[2]  the marker's TTL in ms
-- ARGV[3]  the user the session must be tied to, or '' for any: a live session tied to
--          someone else is left alone (a stale index entry ends nobody else's session)
--
-- Reply    {1}           a live session was ended
--          {0}           there was no session; a marker is left in its place all the
--                        same (it stops a creation in flight under this key)
--          {2, reason}   a marker was there already and is kept: the session ended or
--                        moved on (`rotated`) before
--          {3}           a live session tied to another user: untouched

local key = KEYS[1]
local live = redis.pcall('HEXISTS', key, 'session_ttl')
if live == 1 and ARGV[3] ~= '' and redis.call('HGET', key, 'user_id') ~= ARGV[3] then
  return {3}
end
if live ~= 1 then
  local ended = redis.pcall('HGET', key, 'ended')
  if type(ended) == 'string' then return {2, ended} end
end
redis.call('DEL', key)
redis.pcall('HSET', key, 'ended', ARGV[1])
redis.call('PEXPIRE', key, ARGV[2])
if live == 1 then return {1} end
return {0}
