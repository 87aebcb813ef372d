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
  local us = tonumber(t[2])
  return tonumber(t[1]) * 1000 + (us - us % 1000) / 1000
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
-- Integer division is written (a - a % b) / b, exact for the integers met here and
-- cheaper than a call of math.floor; Lua's % rounds towards minus infinity, as floor.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local yoe = y % 400
  local era = (y - yoe) / 400
  local t = 153 * ((m + 9) % 12) + 2
  local doy = (t - t % 5) / 5 + d - 1
  local doe = yoe * 365 + (yoe - yoe % 4) / 4 - (yoe - yoe % 100) / 100 + doy
  return era * 146097 + doe - 719468
end

-- Unix ms (an integer) -> '2026-04-02T12:34:56+00:00', or with `with_ms`
-- '2026-04-02T12:34:56.789+00:00' (years 0 to 9999). Integer division as in
-- days_from_civil, and the text built byte by byte in one string.char: string.format
-- costs several times more, and this runs on every load.
local function rfc3339(ms, with_ms)
  local frac = ms % 1000
  local secs = (ms - frac) / 1000
  local rem = secs % 86400
  local z = (secs - rem) / 86400 + 719468
  local doe = z % 146097
  local era = (z - doe) / 146097
  local t = doe - (doe - doe % 1460) / 1460 + (doe - doe % 36524) / 36524 - (doe - doe % 146096) / 146096
  local yoe = (t - t % 365) / 365
  local doy = doe - (365 * yoe + (yoe - yoe % 4) / 4 - (yoe - yoe % 100) / 100)
  t = 5 * doy + 2
  local mp = (t - t % 153) / 153
  t = 153 * mp + 2
  local d = doy - (t - t % 5) / 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local ss = rem % 60
  local mm = (rem - ss) / 60 % 60
  local hh = (rem - rem % 3600) / 3600
  local cc, yy = (y - y % 100) / 100, y % 100
  local c1, c2, y1, y2 = (cc - cc % 10) / 10 + 48, cc % 10 + 48, (yy - yy % 10) / 10 + 48, yy % 10 + 48
  local m1, m2, d1, d2 = (m - m % 10) / 10 + 48, m % 10 + 48, (d - d % 10) / 10 + 48, d % 10 + 48
  local h1, h2 = (hh - hh % 10) / 10 + 48, hh % 10 + 48
  local i1, i2, s1, s2 = (mm - mm % 10) / 10 + 48, mm % 10 + 48, (ss - ss % 10) / 10 + 48, ss % 10 + 48
  if with_ms then
    local f2 = frac % 100
    return string.char(c1, c2, y1, y2, 45, m1, m2, 45, d1, d2, 84, h1, h2, 58, i1, i2, 58, s1, s2,
      46, (frac - f2) / 100 + 48, (f2 - f2 % 10) / 10 + 48, f2 % 10 + 48, 43, 48, 48, 58, 48, 48)
  end
  return string.char(c1, c2, y1, y2, 45, m1, m2, 45, d1, d2, 84, h1, h2, 58, i1, i2, 58, s1, s2,
    43, 48, 48, 58, 48, 48)
end

-- An RFC 3339 timestamp -> Unix ms; nil for anything else. The grammar (the same as
-- the Rust side's, in time.rs): at most 64 bytes, YYYY-MM-DD, 'T' or 't', HH:MM:SS,
-- then optionally '.' and 1 or more digits, then 'Z', 'z' or an offset '+hh:mm' /
-- '-hh:mm'. Fractions below 1 ms are dropped. parse_time below reads the stamps the
-- scripts write faster, and calls this for the rest.
local function parse_time_text(s)
  if type(s) ~= 'string' or #s > 64 then return nil end
  local y, m, d, hh, mm, ss, rest = string.match(s,
    '^(%d%d%d%d)-(%d%d)-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  y, m, d, hh, mm, ss = tonumber(y), tonumber(m), tonumber(d), tonumber(hh), tonumber(mm), tonumber(ss)
  if m < 1 or m > 12 or d < 1 or d > 31 or hh > 23 or mm > 59 or ss > 60 then return nil end
  local frac_ms = 0
  local digits, after = string.match(rest, '^%.(%d+)(.*)$')
  if digits then
    frac_ms = math.floor(tonumber(string.sub(digits .. '00', 1, 3)))
    rest = after
  end
  local offset = 0
  if rest ~= 'Z' and rest ~= 'z' then
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

-- parse_time_text, with a fast path for the two shapes the scripts write,
-- 'YYYY-MM-DDTHH:MM:SS+00:00' and 'YYYY-MM-DDTHH:MM:SS.mmm+00:00' (the creation and
-- last-access stamps and the deadline, read on every load): their digits are read by
-- position from their bytes, as string.match's captures and tonumber cost several times
-- more. Any other text, or one of these shapes with a byte out of place, goes to
-- parse_time_text, which accepts both shapes too, to the same ms. `s` is a string, or
-- false or nil (a field that is absent).
local function parse_time(s)
  if not s then return nil end
  local n = #s
  if n ~= 25 and n ~= 29 then return parse_time_text(s) end
  -- Bytes 20 to 29: '+00:00' (n = 25) or '.mmm+00:00' (n = 29).
  local y1, y2, y3, y4, c1, m1, m2, c2, d1, d2, c3, h1, h2, c4, i1, i2, c5, s1, s2,
    t1, t2, t3, t4, t5, t6, t7, t8, t9, t10 = string.byte(s, 1, n)
  -- Month to second are checked for range below; with its second digit a digit (48 to
  -- 57), a two-digit value in 0..99 can only come from a first digit that is one too.
  if not (c1 == 45 and c2 == 45 and c3 == 84 and c4 == 58 and c5 == 58
      and y1 >= 48 and y1 <= 57 and y2 >= 48 and y2 <= 57 and y3 >= 48 and y3 <= 57
      and y4 >= 48 and y4 <= 57 and m2 >= 48 and m2 <= 57 and d2 >= 48 and d2 <= 57
      and h2 >= 48 and h2 <= 57 and i2 >= 48 and i2 <= 57 and s2 >= 48 and s2 <= 57) then
    return parse_time_text(s)
  end
  local frac_ms = 0
  if n == 25 then
    if not (t1 == 43 and t2 == 48 and t3 == 48 and t4 == 58 and t5 == 48 and t6 == 48) then
      return parse_time_text(s)
    end
  else
    if not (t1 == 46 and t2 >= 48 and t2 <= 57 and t3 >= 48 and t3 <= 57 and t4 >= 48 and t4 <= 57
        and t5 == 43 and t6 == 48 and t7 == 48 and t8 == 58 and t9 == 48 and t10 == 48) then
      return parse_time_text(s)
    end
    frac_ms = t2 * 100 + t3 * 10 + t4 - 5328
  end
  local m, d = m1 * 10 + m2 - 528, d1 * 10 + d2 - 528
  local hh, mm, ss = h1 * 10 + h2 - 528, i1 * 10 + i2 - 528, s1 * 10 + s2 - 528
  if m < 1 or m > 12 or d < 1 or d > 31 or hh < 0 or hh > 23 or mm < 0 or mm > 59
      or ss < 0 or ss > 60 then
    return parse_time_text(s)
  end
  local secs = days_from_civil(y1 * 1000 + y2 * 100 + y3 * 10 + y4 - 53328, m, d) * 86400
    + hh * 3600 + mm * 60 + ss
  if secs < 0 then return nil end
  return secs * 1000 + frac_ms
end

-- session_ttl -> whole seconds, 1 to 2^31 - 1, written canonically ('60', not '060',
-- '+60' or '60.0'); nil otherwise. The same grammar as model::parse_idle in Rust. `s` is
-- a string, or false or nil (a field that is absent).
local function valid_idle(s)
  if not s or #s > 10 or not string.find(s, '^[1-9]%d*$') then return nil end
  local n = tonumber(s)
  if n > 2147483647 then return nil end
  return n
end

-- created_at (a string, or false or nil) -> ms; nil when it is unreadable or more than
-- 5 minutes ahead of `now` (Redis's time, ms). A little ahead is another program's
-- clock; further (local time written with 'Z', the year 9999), it would push the
-- deadline created_at + lifetime out by as much.
local function created_ms(s, now)
  local created = parse_time(s)
  if not created or created > now + 300000 then return nil end
  return created
end

-- A session's absolute deadline in ms: its absolute_expires_at, never later than
-- created_at + `lifetime` (ms; 0 when the layer sets none), or that alone when the
-- session has none. created_at is whole seconds, so the cap allows its lost fraction.
-- `created` is created_at in ms when the caller has read it already (with created_ms);
-- `now` is Redis's time (ms).
-- nil when neither applies; false when a stored value is unreadable.
local function deadline_of(f, lifetime, now, created)
  local deadline = nil
  if f.absolute_expires_at then
    deadline = parse_time(f.absolute_expires_at)
    if not deadline then return false end
  end
  if lifetime > 0 then
    created = created or created_ms(f.created_at, now)
    if not created then return false end
    if not deadline then
      deadline = created + lifetime
    elseif created + lifetime + 999 < deadline then
      deadline = created + lifetime + 999
    end
  end
  return deadline
end

-- The idle TTL (s) and deadline (ms or nil) of a live session's fields at `now`
-- (Redis's time, ms); nil if any internal field is unreadable (created_at too far
-- ahead included), so the session is refused the same way everywhere.
local function session_times(f, lifetime, now)
  local idle = valid_idle(f.session_ttl)
  if not idle then return nil end
  local created = created_ms(f.created_at, now)
  if not created then return nil end
  local deadline = deadline_of(f, lifetime, now, created)
  if deadline == false then return nil end
  return idle, deadline
end

-- The key's TTL in ms: the idle TTL, never past the absolute deadline (ms or nil).
local function expire_ms(idle_secs, deadline, now)
  local ms = idle_secs * 1000
  if deadline and deadline - now < ms then ms = deadline - now end
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

-- Reads a session key. Returns a status and, for 1 and 2, the flat hash and a map of
-- the fields the scripts read (session_ttl, created_at, last_accessed_at,
-- absolute_expires_at, rotating, ended; false when absent; user fields are not copied):
--   1 a live session, 0 no key, 2 a marker, -1 not a usable session (wrong type,
--   internal fields missing, over the limits).
local function read_session(key, max_fields, max_bytes)
  local h = redis.pcall('HGETALL', key)
  if h.err then return -1 end
  local n = #h
  if n == 0 then return 0 end
  if n > max_fields * 2 then return -1 end
  -- Made with its keys, so it never grows; a lookup tells the keys from user fields.
  local f = {session_ttl = false, created_at = false, last_accessed_at = false,
    absolute_expires_at = false, rotating = false, ended = false}
  local size = 0
  for i = 1, n, 2 do
    local name, value = h[i], h[i + 1]
    size = size + #name + #value
    if f[name] == false then f[name] = value end
  end
  if size > max_bytes then return -1 end
  if not f.session_ttl then
    if f.ended and n == 2 then return 2, h, f end
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
  local now = now_ms()
  local idle, deadline = session_times(f, lifetime, now)
  if not idle then return -1 end
  if deadline and now >= deadline then
    redis.call('DEL', key)
    return 0
  end
  return 1, h, f, idle, deadline, now
end

-- The length of a user field's value as the handlers see it: for a value encrypted at
-- rest, 'enc:v1:<key id>:<base64url(24-byte nonce, ciphertext, 16-byte tag)>' (see
-- crypto.rs), the length of its plaintext; otherwise its own length.
local function plain_len(v)
  if string.byte(v, 1) == 101 and string.sub(v, 1, 7) == 'enc:v1:' then
    local colon = string.find(v, ':', 8, true)
    if colon then
      local b64 = #v - colon
      local n = (b64 * 3 - (b64 * 3) % 4) / 4 - 40
      if n >= 0 then return n end
    end
  end
  return #v
end

-- Whether the user fields of the hash at `key` stay within `limits.fields` fields and
-- `limits.bytes` bytes (names and values as the handlers see them: with
-- `limits.sealed`, encrypted values at their plaintext length; the internal fields,
-- listed here as in the Rust side's RESERVED_FIELDS, do not count) once a save applies
-- `sets` (name, value, ...) and `dels` (names; both nil when empty) and creates the
-- counters among names[5..] that `got` (their values, read with HMGET) shows absent:
-- each then holds its increment, `by[n - 4]` (canonical integer text).
local function fits_after(key, sets, dels, names, got, by, limits)
  local sealed = limits.sealed
  local len = function(v)
    if sealed then return plain_len(v) end
    return #v
  end
  local internal = {created_at = true, last_accessed_at = true, session_ttl = true,
    absolute_expires_at = true, user_id = true, rotating = true, csrf_token = true}
  local h = redis.call('HGETALL', key)
  local count, size = 0, 0
  for i = 1, #h, 2 do
    if not internal[h[i]] then count, size = count + 1, size + #h[i] + len(h[i + 1]) end
  end
  for n = 5, #names do
    if not got[n] then count, size = count + 1, size + #names[n] + #by[n - 4] end
  end
  local changed = {}
  if sets then for i = 1, #sets, 2 do changed[#changed + 1] = sets[i] end end
  if dels then for i = 1, #dels do changed[#changed + 1] = dels[i] end end
  if #changed > 0 then
    local old = redis.call('HMGET', key, unpack(changed))
    local n_sets = sets and #sets / 2 or 0
    for i = 1, #changed do
      local before = old[i]
      if i <= n_sets then
        local value = len(sets[2 * i])
        if before then size = size + value - len(before)
        else count, size = count + 1, size + #changed[i] + value end
      elseif before then
        count, size = count - 1, size - #changed[i] - len(before)
      end
    end
  end
  return count <= limits.fields and size <= limits.bytes
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
