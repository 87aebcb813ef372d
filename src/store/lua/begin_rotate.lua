-- begin_rotate: first step of an ID rotation, on the old key. Marks the session as
-- rotating and returns its current contents, in one step: from here on saves to the
-- old key are refused, so no change acknowledged on it can be left out of the copy.
--
-- KEYS[1]  the session key being rotated away (the only key touched)
-- ARGV[1]  most fields a stored session may have (internal ones included)
-- ARGV[2]  most bytes its field names and values may take together
-- ARGV[3]  the layer's absolute lifetime in ms (0: none)
-- ARGV[4]  how long the mark holds, in ms: after that it is abandoned (the rotating
--          request died) and the next script that meets it clears it
-- ARGV[5]  this rotation's token (finish_rotate checks it)
--
-- Reply    {1, fields, deadline_ms}  marked: the hash as a flat array (before the mark),
--                                    and the session's absolute deadline in ms (-1: none)
--          {0}                       no session (then nothing to rotate)
--          {2, reason}               a marker: the session ended a moment ago
--          {3}                       another rotation of this session is in progress
--          {-1}                      the key holds no usable session; untouched

local key = KEYS[1]
local status, h, f, _, deadline, now =
  open_session(key, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if status == 2 then return {2, f.ended} end
if status ~= 1 then return {status} end
if rotation_in_progress(f.rotating, now) then return {3} end
local marked = redis.pcall('HSET', key, 'rotating', (now + tonumber(ARGV[4])) .. ':' .. ARGV[5])
if type(marked) == 'table' and marked.err then return marked end
return {1, h, deadline or -1}
