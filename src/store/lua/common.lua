-- Helpers shared by the session scripts; prepended to each of them (see scripts.rs).
--
-- The data model, as these helpers read it:
--   a live session   a HASH with session_ttl, created_at, last_accessed_at, optionally
--                    absolute_expires_at, user_id and rotating, plus the user fields
--   a marker         a HASH with the single field `ended` (rotated, destroyed or
--                    terminated) and a short TTL: the session ended; it grants nothing
-- Time always comes from Redis (TIME), so app servers with drifting clocks agree.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Unix ms -> '2026-04-02T12:34:56+00:00', or with `with_ms` '2026-04-02T12:34:56.789+00:00'.
local function rfc3339(ms, with_ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local hms = string.format('%04d-%02d-%02dT%02d:%02d:%02d',
    y, m, d, math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
  if with_ms then
    return string.format('%s.%03d+00:00', hms, ms - secs * 1000)
  end
  return hms .. '+00:00'
end

-- An RFC 3339 timestamp -> Unix ms; nil for anything else. The grammar (the same as
-- the Rust side's, in time.rs): YYYY-MM-DDTHH:MM:SS, then optionally '.' and 1 to 9
-- digits, then 'Z' or an offset '+hh:mm' / '-hh:mm'. Fractions below 1 ms are dropped.
local function parse_time(s)
  if type(s) ~= 'string' then return nil end
  local y, m, d, hh, mm, ss, rest = string.match(s,
    '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  y, m, d, hh, mm, ss = tonumber(y), tonumber(m), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss)
  if m < 1 or m > 12 or d < 1 or d > 31 or hh > 23 or mm > 59 or ss > 60 then return nil end
  local frac_ms = 0
  local digits, after = string.match(rest, '^%.(%d+)(.*)$')
  if digits then
    if #digits > 9 then return nil end
    frac_ms = math.floor(tonumber(string.sub(digits .. '00', 1, 3)))
    rest = after
  end
  local offset = 0
  if rest ~= 'Z' then
    local sign, oh, om = string.match(rest, '^([+-])(%d%d):(%d%d)$')
    if not sign then return nil end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil end
    offset = (oh * 3600 + om * 60) * (sign == '+' and 1 or -1)
  end
  local secs = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss - offset
  if secs < 0 then return nil end
  return secs * 1000 + frac_ms
end

-- session_ttl -> whole seconds, 1 to 2^31 - 1, written canonically ('60', not '060',
-- '+60' or '60.0'); nil otherwise. The same grammar as model::parse_idle in Rust.
local function valid_idle(s)
  if type(s) ~= 'string' or not string.match(s, '^[1-9]%d*$') or #s > 10 then return nil end
  local n = tonumber(s)
  if n > 2147483647 then return nil end
  return n
end

-- A session's absolute deadline in ms: its absolute_expires_at, never later than
-- created_at + `lifetime` (ms; 0 when the layer sets none), or that alone when the
-- session has none. created_at is whole seconds, so the cap allows its lost fraction.
-- `created` is created_at in ms when the caller has parsed it already.
-- nil when neither applies; false when a stored value is unreadable.
local function deadline_of(f, lifetime, created)
  local deadline = nil
  if f.absolute_expires_at then
    deadline = parse_time(f.absolute_expires_at)
    if not deadline then return false end
  end
  if lifetime > 0 then
    created = created or parse_time(f.created_at)
    if not created then return false end
    if not deadline then
      deadline = created + lifetime
    elseif created + lifetime + 999 < deadline then
      deadline = created + lifetime + 999
    end
  end
  return deadline
end

-- The idle TTL (s) and deadline (ms or nil) of a live session's fields; nil if any
-- internal field is unreadable, so the session is refused the same way everywhere.
local function session_times(f, lifetime)
  local idle = valid_idle(f.session_ttl)
  if not idle then return nil end
  local created = parse_time(f.created_at)
  if not created then return nil end
  local deadline = deadline_of(f, lifetime, created)
  if deadline == false then return nil end
  return idle, deadline
end

-- The key's TTL in ms: the idle TTL, never past the absolute deadline (ms or nil).
local function expire_ms(idle_secs, deadline, now)
  local ms = idle_secs * 1000
  if deadline then ms = math.min(ms, deadline - now) end
  return ms
end

-- `rotating` holds '<until ms>:<token>': a rotation is copying the session to a new key
-- and saves are refused until `until`; after it the mark is abandoned (the rotating
-- request died) and is cleared by the next script that meets it. No rotation holds its
-- mark for more than 5 minutes: a later `until` (planted by someone else) is abandoned.
local function rotation_in_progress(mark, now)
  if not mark then return false end
  local until_ms = tonumber(string.match(mark, '^(%d+):'))
  return until_ms ~= nil and now < until_ms and until_ms <= now + 300000
end

-- Reads a session key. Returns a status and, for 1 and 2, the flat hash and a map:
--   1 a live session, 0 no key, 2 a marker, -1 not a usable session (wrong type,
--   internal fields missing, over the limits).
local function read_session(key, max_fields, max_bytes)
  local h = redis.pcall('HGETALL', key)
  if h.err then return -1 end
  local len = #h / 2
  if len == 0 then return 0 end
  if len > max_fields then return -1 end
  local f, size = {}, 0
  for i = 1, #h, 2 do
    f[h[i]] = h[i + 1]
    size = size + #h[i] + #h[i + 1]
  end
  if size > max_bytes then return -1 end
  if not f.session_ttl then
    if f.ended and len == 1 then return 2, h, f end
    return -1
  end
  return 1, h, f
end

-- Opens a session key for load and begin_rotate: read_session's status, and for a live
-- session whose internal fields all read, also its idle TTL (s), its deadline (ms or
-- nil) and Redis's time now (ms). A session past its deadline is deleted here and
-- reported as missing (0); one with an unreadable internal field as unusable (-1).
local function open_session(key, max_fields, max_bytes, lifetime)
  local status, h, f = read_session(key, max_fields, max_bytes)
  if status ~= 1 then return status, h, f end
  local idle, deadline = session_times(f, lifetime)
  if not idle then return -1 end
  local now = now_ms()
  if deadline and now >= deadline then
    redis.call('DEL', key)
    return 0
  end
  return 1, h, f, idle, deadline, now
end

-- `cmd key list[from..]` in chunks of 200 arguments, which unpack() can always take.
-- The chunk size is even, so field/value pairs stay together.
local function call_chunked(cmd, key, list, from)
  local i = from
  while i <= #list do
    local last = math.min(i + 199, #list)
    redis.call(cmd, key, unpack(list, i, last))
    i = last + 1
  end
end
