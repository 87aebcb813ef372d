-- Helpers shared by the session scripts; prepended to each of them.
-- Time always comes from Redis (TIME), so app servers with drifting clocks agree.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Unix seconds -> '2026-04-02T12:34:56+00:00' (civil-from-days, Howard Hinnant).
local function rfc3339(secs)
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
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d+00:00',
    y, m, d, math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60)
end

-- '2026-04-02T12:34:56+00:00' (or '...Z') -> Unix seconds; nil for anything else.
local function parse_rfc3339(s)
  if type(s) ~= 'string' then return nil end
  local y, m, d, hh, mm, ss = string.match(s, '^(%d%d%d%d)-(%d%d)-(%d%d)T(%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  local rest = string.sub(s, 20)
  if rest ~= 'Z' and rest ~= '+00:00' then return nil end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mm) * 60 + tonumber(ss)
end

-- The key's TTL in ms: the idle TTL, never past the absolute deadline (Unix seconds or nil).
local function expire_ms(idle_secs, deadline, now)
  local ms = idle_secs * 1000
  if deadline then ms = math.min(ms, deadline * 1000 - now) end
  return ms
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
