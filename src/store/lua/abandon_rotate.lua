-- abandon_rotate: a rotation that will not finish (refused after begin_rotate, or
-- failed on the way) lifts its mark from the old key at once, so the session takes
-- saves again without waiting for the mark to lapse. Only this rotation's own mark goes.
--
-- KEYS[1]  the session key whose rotation is abandoned (the only key touched)
-- ARGV[1]  this rotation's token
--
-- Reply    1   the mark was this rotation's, and is gone
--          0   the mark is not this rotation's (or there is none): nothing written

local key = KEYS[1]
local mark = redis.pcall('HGET', key, 'rotating')
if type(mark) ~= 'string' or string.match(mark, ':(.*)$') ~= ARGV[1] then return 0 end
redis.call('HDEL', key, 'rotating')
return 1
