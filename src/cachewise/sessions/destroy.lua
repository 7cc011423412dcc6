-- Destroy one session.  KEYS[1] the session.  ARGV[1] the owner it must have to be destroyed, or '*' for any
-- (logging a user out everywhere destroys only the sessions still theirs).
-- Returns {1 when there was a session it destroyed else 0, its owner ('' for none)}.
local owner = ''
local found = redis.pcall('HGET', KEYS[1], 'm:u')
if type(found) == 'string' then owner = found end
if ARGV[1] ~= '*' and owner ~= ARGV[1] then return {0, owner} end
return {redis.call('DEL', KEYS[1]), owner}
