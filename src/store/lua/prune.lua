-- prune: remove dead entries from a user's index, each only if it is older than the
-- grace (by Redis's clock) and its score is still the one the caller read: an entry
-- re-added meanwhile (a login of that session in flight) is kept.
--
-- KEYS[1]  the user's index (a sorted set; the only key touched)
-- ARGV[1]  the grace in ms
-- ARGV[2..] member, score pairs
--
-- Reply    how many entries were removed (the set is deleted by Redis once empty)

local key, removed = KEYS[1], 0
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', key, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) and tonumber(score) < cutoff then
    removed = removed + redis.call('ZREM', key, ARGV[i])
  end
end
return removed
