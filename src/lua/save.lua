-- save: apply one request's field-level changes, only if the session still exists.
--
-- Because nothing is written when the key is gone, a save that races a logout, a
-- rotation or an expiry cannot bring the session back, and one that lands late
-- (after a timeout) is harmless.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  new idle TTL in seconds, or '' to keep the stored one
-- ARGV[2..] op, field, value triples: 's' set to value, 'd' delete (value ignored),
--          'i' increment by value (HINCRBY, atomic across concurrent requests)
--
-- Reply    1   applied, TTL refreshed
--          0   the session is gone, unusable, or past its absolute deadline: nothing
--              written (a key past its deadline is deleted)
--          -2  an increment met a value that is not a 64-bit integer: nothing written

local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return 0 end

local stored_idle = tonumber(redis.call('HGET', key, 'session_ttl'))
if not stored_idle then return 0 end
local now = now_ms()
local deadline = parse_rfc3339(redis.call('HGET', key, 'absolute_expires_at'))
if deadline and now >= deadline * 1000 then
  redis.call('DEL', key)
  return 0
end

-- Check every increment before writing anything, so a bad one changes nothing.
for i = 2, #ARGV, 3 do
  if ARGV[i] == 'i' then
    local cur = redis.call('HGET', key, ARGV[i + 1])
    if cur then
      local n = tonumber(cur)
      if not string.match(cur, '^-?%d+$') or #cur > 19 or math.abs(n + tonumber(ARGV[i + 2])) >= 9.2e18 then
        return -2
      end
    end
  end
end

local sets, dels = {}, {}
for i = 2, #ARGV, 3 do
  local op, field = ARGV[i], ARGV[i + 1]
  if op == 'i' then
    redis.call('HINCRBY', key, field, ARGV[i + 2])
  elseif op == 's' then
    sets[#sets + 1] = field
    sets[#sets + 1] = ARGV[i + 2]
  else
    dels[#dels + 1] = field
  end
end
call_chunked('HSET', key, sets, 1)
call_chunked('HDEL', key, dels, 1)

local idle = tonumber(ARGV[1])
if idle then
  redis.call('HSET', key, 'session_ttl', idle)
else
  idle = stored_idle
end
redis.call('PEXPIRE', key, expire_ms(idle, deadline, now))
return 1
