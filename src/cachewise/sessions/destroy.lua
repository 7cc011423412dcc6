-- Destroy one session (and drop its id from its owner's index).
-- KEYS[1] the session.  ARGV[1] the owners' index prefix; ARGV[2] the session id.
-- Returns 1 when there was a session.
local owner = redis.pcall('HGET', KEYS[1], 'm:u')
local removed = redis.call('DEL', KEYS[1])
if type(owner) == 'string' then redis.call('SREM', ARGV[1] .. owner, ARGV[2]) end
return removed
