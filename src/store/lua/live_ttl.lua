-- live_ttl: what is left of a live session's TTL, read just before a response to a read
-- sends a persistent cookie again. Since the request loaded it, the session may have
-- ended, moved to a new ID, or had its TTL changed by another request: the cookie goes
-- out only for a live key, with a `Max-Age` of what is left of its TTL now. Reads only.
--
-- KEYS[1]  the session key (the only key touched)
--
-- Reply    the key's TTL in ms   a live session, not being rotated away
--          0                     none: no key, a marker, a rotation in progress, a key
--                                without a TTL, or not a usable session

local key = KEYS[1]
local got = redis.pcall('HMGET', key, 'session_ttl', 'rotating')
if got.err or not got[1] then return 0 end
if got[2] and rotation_in_progress(got[2], now_ms()) then return 0 end
local pttl = redis.call('PTTL', key)
if pttl <= 0 then return 0 end
return pttl
