-- Destroy every session of one owner ("log out everywhere"), and its index.  The index may list sessions that have
-- expired meanwhile: they are skipped.
-- KEYS[1] the owner's index.  ARGV[1] the sessions' key prefix; ARGV[2] the owner's token.
-- Returns the number of sessions destroyed.
local destroyed = 0
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. sid
  if redis.pcall('HGET', key, 'm:u') == ARGV[2] then destroyed = destroyed + redis.call('DEL', key) end
end
redis.call('DEL', KEYS[1])
return destroyed
