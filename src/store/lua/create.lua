-- create: write a new session, only if its key does not exist yet.
--
-- Used for a new session and for the new ID of a rotation (which carries over
-- created_at and absolute_expires_at in ARGV[3..]).
--
-- KEYS[1]  the new session key (the only key touched)
-- ARGV[1]  idle TTL in whole seconds, written canonically (stored as given)
-- ARGV[2]  the layer's absolute lifetime in ms (0: none)
-- ARGV[3..] field, value pairs (never last_accessed_at or session_ttl: set here)
--
-- Reply    {1, ttl_ms}   created, with this TTL
--          {0}           a session holds the key: nothing written (an ID collision
--                        never overwrites)
--          {-1}          the absolute deadline has passed: nothing written
--          {-2}          a marker holds the key (the session was ended, e.g. by "log
--                        out everywhere", before its creation landed): nothing written

local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  if redis.pcall('HEXISTS', key, 'session_ttl') ~= 1 and redis.pcall('HEXISTS', key, 'ended') == 1 then
    return {-2}
  end
  return {0}
end

local idle = tonumber(ARGV[1])
local now = now_ms()
local stamp = rfc3339(now)
local f, carried = {created_at = stamp}, false
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'created_at' then f.created_at, carried = ARGV[i + 1], true end
  if ARGV[i] == 'absolute_expires_at' then f.absolute_expires_at = ARGV[i + 1] end
end
local lifetime = tonumber(ARGV[2])
local deadline = nil
if carried or f.absolute_expires_at then
  -- A stamp written just now needs no parsing: it reads back as `now` in whole seconds.
  deadline = deadline_of(f, lifetime, now, not carried and now - now % 1000 or nil)
  if deadline == false then return {-1} end
elseif lifetime > 0 then
  -- A new session's deadline counts from now, to the millisecond, not from its
  -- created_at stamp (whole seconds).
  deadline = now + lifetime
end
local new_deadline = nil
if deadline and not f.absolute_expires_at then new_deadline = rfc3339(deadline, true) end
local ttl = expire_ms(idle, deadline, now)
if ttl <= 0 then return {-1} end

local internal = {'created_at', f.created_at, 'last_accessed_at', stamp, 'session_ttl', ARGV[1]}
if new_deadline then
  internal[#internal + 1] = 'absolute_expires_at'
  internal[#internal + 1] = new_deadline
end
if #ARGV <= 190 then
  -- The common case: one HSET for everything (created_at from ARGV, if any, wins).
  local n = #internal
  for i = 3, #ARGV do internal[n + i - 2] = ARGV[i] end
  redis.call('HSET', key, unpack(internal))
else
  redis.call('HSET', key, unpack(internal))
  call_chunked('HSET', key, ARGV, 3)
end
-- As text: Redis writes a number argument with '%.17g', which costs more than this.
redis.call('PEXPIREAT', key, string.format('%d', now + ttl))
return {1, ttl}
