-- finish_rotate: last step of an ID rotation, on the old key, once the new key holds
-- the session. Turns the old key into a marker, if the mark set by begin_rotate is
-- still this rotation's: otherwise the session changed meanwhile (ended, or its mark
-- was abandoned and cleared, so saves may have landed) and the rotation must not win.
--
-- KEYS[1]  the session key being rotated away (the only key touched)
-- ARGV[1]  this rotation's token
-- ARGV[2]  the marker's TTL in ms
--
-- Reply    1   the old key is now a marker `{ended = rotated}`
--          0   the mark is not this rotation's: nothing written

local key = KEYS[1]
local mark = redis.pcall('HGET', key, 'rotating')
if type(mark) ~= 'string' or string.match(mark, ':(.*)$') ~= ARGV[1] then return 0 end
redis.call('DEL', key)
-- Out of memory the marker cannot be written: the old key is then simply gone.
redis.pcall('HSET', key, 'ended', 'rotated')
redis.call('PEXPIRE', key, ARGV[2])
return 1
