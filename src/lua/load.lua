-- load: read a session and refresh its sliding expiry, in one round trip.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  touch interval in seconds: skip the refresh write if the last one is more
--          recent than this (0: refresh on every load)
-- ARGV[2]  most fields a stored session may have (internal ones included)
-- ARGV[3]  most bytes its field names and values may take together
--
-- Reply    {1, fields, ttl_ms}         loaded: the hash as a flat array as it was before
--                                      this load touched it, and the key's TTL now
--          {0}                         no session: never existed, expired, or past its
--                                      absolute deadline (then deleted here)
--          {-1}                        the key holds no usable session (wrong type,
--                                      internal fields missing, over the limits); untouched

local key = KEYS[1]
local len = redis.pcall('HLEN', key)
if type(len) ~= 'number' then return {-1} end
if len == 0 then return {0} end
if len > tonumber(ARGV[2]) then return {-1} end

local h = redis.call('HGETALL', key)
local f, size = {}, 0
for i = 1, #h, 2 do
  f[h[i]] = h[i + 1]
  size = size + #h[i] + #h[i + 1]
end
if size > tonumber(ARGV[3]) then return {-1} end

local idle = tonumber(f.session_ttl)
if not idle or idle < 1 or idle > 2147483647 or idle ~= math.floor(idle)
  or not parse_rfc3339(f.created_at) then
  return {-1}
end
local deadline = nil
if f.absolute_expires_at then
  deadline = parse_rfc3339(f.absolute_expires_at)
  if not deadline then return {-1} end
end

local now = now_ms()
if deadline and now >= deadline * 1000 then
  redis.call('DEL', key)
  return {0}
end

local touch = tonumber(ARGV[1])
if touch > 0 then
  local last = parse_rfc3339(f.last_accessed_at)
  local pttl = redis.call('PTTL', key)
  if last and pttl > 0 and now < (last + touch) * 1000 then
    return {1, h, pttl}
  end
end

local stamp = rfc3339(math.floor(now / 1000))
local ttl = expire_ms(idle, deadline, now)
-- A Redis out of memory (noeviction) refuses the refresh; the read is still served, and
-- the key keeps the TTL it has.
local refreshed = redis.pcall('HSET', key, 'last_accessed_at', stamp)
if type(refreshed) == 'table' and refreshed.err then
  return {1, h, redis.call('PTTL', key)}
end
redis.call('PEXPIRE', key, ttl)
return {1, h, ttl}
