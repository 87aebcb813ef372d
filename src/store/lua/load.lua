-- load: read a session and refresh its sliding expiry, in one round trip.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  touch interval in seconds: skip the refresh write if the last one is more
--          recent than this (0: refresh on every load)
-- ARGV[2]  most fields a stored session may have (internal ones included)
-- ARGV[3]  most bytes its field names and values may take together
-- ARGV[4]  the layer's absolute lifetime in ms (0: none)
--
-- Reply    {1, fields, ttl_ms}   loaded: the hash as a flat array as it was before this
--                                load touched it, and the key's TTL now (-1: unknown)
--          {0}                   no session: never existed, expired, or past its
--                                absolute deadline (then deleted here)
--          {2, reason}           a marker: the session ended (rotated, destroyed,
--                                terminated) a moment ago
--          {-1}                  the key holds no usable session; untouched

local key = KEYS[1]
local status, h, f, idle, deadline, now =
  open_session(key, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if status == 2 then return {2, f.ended} end
if status ~= 1 then return {status} end
if f.rotating and not rotation_in_progress(f.rotating, now) then
  redis.call('HDEL', key, 'rotating')
end

local touch = tonumber(ARGV[1])
if touch > 0 then
  local last = parse_time(f.last_accessed_at)
  local pttl = redis.call('PTTL', key)
  -- A stamp in the future (another program's clock ahead) never skips the refresh.
  if last and last <= now and pttl > 0 and now < last + touch * 1000 then
    return {1, h, pttl}
  end
end

local ttl = expire_ms(idle, deadline, now)
-- A Redis out of memory (noeviction) refuses the stamp; the read is still served and
-- the TTL still refreshed (PEXPIRE allocates nothing, and Redis allows it).
redis.pcall('HSET', key, 'last_accessed_at', rfc3339(now))
redis.call('PEXPIREAT', key, now + ttl)
return {1, h, ttl}
