-- index_drop: drop a session's entry from a user's index, unless the entry was added
-- again at or after `before`: when a session is tied to another user, its entry in the
-- previous user's index goes, but if it has been tied back to that user since (a later
-- request re-added it), the fresh entry stays, however late this lands.
--
-- KEYS[1]  the user's index (a sorted set; the only key touched)
-- ARGV[1]  the session's member (its key without the prefix)
-- ARGV[2]  before: the time of the save that tied the session away (ms, Redis's clock)
--
-- Reply    1 if the entry was dropped, 0 otherwise

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
