-- save: apply one request's field-level changes, only if the session still exists.
--
-- Because nothing is written when the key is gone, is a marker, or is being rotated, a
-- save that races a logout, a rotation or an expiry cannot bring the session back or be
-- lost in a copy, and one that lands late (after a timeout) is harmless.
--
-- KEYS[1]  the session key (the only key touched)
-- ARGV[1]  new idle TTL in whole seconds, written canonically (stored as given), or ''
--          to keep the stored one
-- ARGV[2]  the layer's absolute lifetime in ms (0: none)
-- ARGV[3]  most fields, and ARGV[4] most bytes (names and values), the hash may have
--          after a save that sets fields or makes new ones
-- ARGV[5]  '1' if the layer encrypts values at rest (they count at their plaintext
--          length), '0' if not
-- ARGV[6..] op, field, value triples: 's' set to value, 'd' delete (value ignored),
--          'i' increment by value (HINCRBY, atomic across concurrent requests)
--
-- Reply    {1, ttl_ms, now}
--                        applied; the key's TTL now, and Redis's time (ms)
--          {0}           refused: the session is gone, a marker, unusable, being
--                        rotated, or past its absolute deadline (then deleted here)
--          {-2}          an increment met a value that is not a 64-bit integer:
--                        nothing written
--          {-3}          the hash would pass the limits (other requests grew it since
--                        this one loaded it): nothing written

local key = KEYS[1]
-- One pass over the changes: the incremented fields (read below, to undo with), and
-- the fields to set and to delete.
local names = {'session_ttl', 'created_at', 'absolute_expires_at', 'rotating'}
local by, sets, dels = {}, nil, nil
for i = 6, #ARGV, 3 do
  local op = ARGV[i]
  if op == 'i' then
    names[#names + 1] = ARGV[i + 1]
    by[#by + 1] = ARGV[i + 2]
  elseif op == 's' then
    sets = sets or {}
    sets[#sets + 1] = ARGV[i + 1]
    sets[#sets + 1] = ARGV[i + 2]
  elseif op == 'd' then
    dels = dels or {}
    dels[#dels + 1] = ARGV[i + 1]
  end
end
-- One read for what every save needs: the internal fields (no session_ttl: no
-- session), and the current value of each incremented field.
local got = redis.pcall('HMGET', key, unpack(names))
if got.err then return {0} end
local f = {session_ttl = got[1], created_at = got[2], absolute_expires_at = got[3]}
local now = now_ms()
local stored_idle, deadline = session_times(f, tonumber(ARGV[2]), now)
if not stored_idle then return {0} end
if deadline and now >= deadline then
  redis.call('DEL', key)
  return {0}
end
if got[4] then
  if rotation_in_progress(got[4], now) then return {0} end
end

-- The limits hold for the stored hash, not only for the copy this request changed:
-- other requests may have grown it since. A save that sets fields or makes new counters
-- is checked against what is stored now (an increment of an existing counter grows it
-- by a few digits at most, which the load's limit allows for).
local grows = sets ~= nil
for n = 5, #names do
  if not got[n] then grows = true end
end
local limits = {fields = tonumber(ARGV[3]), bytes = tonumber(ARGV[4]), sealed = ARGV[5] == '1'}
if grows and not fits_after(key, sets, dels, names, got, by, limits) then
  return {-3}
end
if got[4] then redis.call('HDEL', key, 'rotating') end

-- Increments first: HINCRBY checks the stored value and the 64-bit range exactly. If
-- one fails, the ones before it are undone and nothing else is written.
for n = 5, #names do
  local r = redis.pcall('HINCRBY', key, names[n], by[n - 4])
  if type(r) == 'table' and r.err then
    for j = n - 1, 5, -1 do
      if got[j] then
        redis.call('HSET', key, names[j], got[j])
      else
        redis.call('HDEL', key, names[j])
      end
    end
    -- Out of memory is the store's state, not the value's: pass the error on.
    if string.sub(r.err, 1, 3) == 'OOM' then return r end
    return {-2}
  end
end

if sets then call_chunked('HSET', key, sets, 1) end
if dels then call_chunked('HDEL', key, dels, 1) end

local idle = tonumber(ARGV[1])
if idle then
  redis.call('HSET', key, 'session_ttl', ARGV[1])
else
  idle = stored_idle
end
local ttl = expire_ms(idle, deadline, now)
-- As text: Redis writes a number argument with '%.17g', which costs more than this.
redis.call('PEXPIREAT', key, string.format('%d', now + ttl))
return {1, ttl, now}
