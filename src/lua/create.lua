-- create: write a new session, only if its key does not exist yet.
--
-- Used for a new session and for the new ID of a rotation (which carries over
-- created_at, absolute_expires_at and the rest in ARGV[3..]).
--
-- KEYS[1]  the new session key (the only key touched)
-- ARGV[1]  idle TTL in seconds
-- ARGV[2]  absolute lifetime in seconds from now (0: none); ignored if the fields
--          carry absolute_expires_at
-- ARGV[3..] field, value pairs (never last_accessed_at or session_ttl: set here)
--
-- Reply    1   created, with its TTL
--          0   the key exists: nothing written (an ID collision never overwrites)
--          -1  the carried absolute deadline has passed: nothing written

local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return 0 end

local idle = tonumber(ARGV[1])
local now = now_ms()
local stamp = rfc3339(math.floor(now / 1000))
local created, deadline = stamp, nil
for i = 3, #ARGV, 2 do
  if ARGV[i] == 'created_at' then created = ARGV[i + 1] end
  if ARGV[i] == 'absolute_expires_at' then deadline = parse_rfc3339(ARGV[i + 1]) end
end
local lifetime = tonumber(ARGV[2])
local new_deadline = nil
if not deadline and lifetime > 0 then
  deadline = math.floor(now / 1000) + lifetime
  new_deadline = rfc3339(deadline)
end
local ttl = expire_ms(idle, deadline, now)
if ttl <= 0 then return -1 end

if #ARGV <= 190 then
  -- The common case: one HSET for everything.
  if new_deadline then
    redis.call('HSET', key, 'created_at', created, 'last_accessed_at', stamp,
      'session_ttl', idle, 'absolute_expires_at', new_deadline, unpack(ARGV, 3))
  else
    redis.call('HSET', key, 'created_at', created, 'last_accessed_at', stamp,
      'session_ttl', idle, unpack(ARGV, 3))
  end
else
  redis.call('HSET', key, 'created_at', created, 'last_accessed_at', stamp, 'session_ttl', idle)
  if new_deadline then redis.call('HSET', key, 'absolute_expires_at', new_deadline) end
  call_chunked('HSET', key, ARGV, 3)
end
redis.call('PEXPIRE', key, ttl)
return 1
