-- load: read a session and refresh its sliding expiry, in one round trip.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  touch interval in seconds: skip the refresh write if the last one is more
--          recent than this and the session's idle TTL is longer than this (0:
--          refresh on every load)
-- ARGV[2]  most fields a stored session may have (internal ones included)
-- ARGV[3]  most bytes its field names and values may take together
-- ARGV[4]  the layer's absolute lifetime in ms (0: none)
--
-- Reply    an array whose last element is the status:
--          {name, value, ..., ttl_ms, 1}   loaded, and its TTL renewed: the hash as a
--                                          flat array as it was before this load
--                                          touched it, then the key's TTL now
--          {name, value, ..., ttl_ms, fresh_ms, 3}
--                                          loaded within the touch interval: the same,
--                                          nothing written; a load in the next
--                                          fresh_ms ms would answer the same (the touch
--                                          interval's end or the absolute deadline,
--                                          whichever is first), unless the session
--                                          changes meanwhile
--          {0}                             no session: never existed, expired, or past
--                                          its absolute deadline (then deleted here)
--          {reason, 2}                     a marker: the session ended (rotated,
--                                          destroyed, terminated) a moment ago
--          {-1}                            the key holds no usable session; untouched
-- (The hash's own array is replied with the TTL and status appended: Redis pays for
-- every nested array of a reply, and copying the fields costs more.)

local key = KEYS[1]
local status, h, f, idle, deadline, now =
  open_session(key, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if status == 2 then return {f.ended, 2} end
if status ~= 1 then return {status} end
if f.rotating and not rotation_in_progress(f.rotating, now) then
  redis.call('HDEL', key, 'rotating')
end

local n = #h
local touch = ARGV[1] ~= '0' and tonumber(ARGV[1]) or 0
-- A session whose own idle TTL (Session::set_ttl) is not longer than the touch
-- interval is refreshed on every load: skipped refreshes would let it expire in use.
if touch > 0 and idle > touch then
  local last = parse_time(f.last_accessed_at)
  local pttl = redis.call('PTTL', key)
  -- A stamp in the future (another program's clock ahead) never skips the refresh.
  if last and last <= now and pttl > 0 and now < last + touch * 1000 then
    -- Until the touch interval ends, and never past the absolute deadline (which the
    -- next load would enforce), whatever TTL another program gave the key.
    local fresh = last + touch * 1000 - now
    if deadline and deadline - now < fresh then fresh = deadline - now end
    h[n + 1], h[n + 2], h[n + 3] = pttl, fresh, 3
    return h
  end
end

local ttl = expire_ms(idle, deadline, now)
-- A Redis out of memory (noeviction) refuses the stamp; the read is still served and
-- the TTL still refreshed (PEXPIRE allocates nothing, and Redis allows it).
redis.pcall('HSET', key, 'last_accessed_at', rfc3339(now))
-- As text: Redis writes a number argument with '%.17g', which costs more than this.
redis.call('PEXPIREAT', key, string.format('%d', now + ttl))
h[n + 1], h[n + 2] = ttl, 1
return h
