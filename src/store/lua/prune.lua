-- prune: remove dead entries from a user's index, each only if its score is still the
-- one the caller read: an entry re-added meanwhile (a login of that session in flight)
-- is kept.
--
-- KEYS[1]  the user's index (a sorted set; the only key touched)
-- ARGV     member, score pairs
--
-- Reply    how many entries were removed (the set is deleted by Redis once empty)

local key, removed = KEYS[1], 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', key, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', key, ARGV[i])
  end
end
return removed
