-- Read a session, renewing its idle TTL when sliding (never past its absolute lifetime).
-- KEYS[1] the session.  ARGV[1] idle TTL ms; ARGV[2] absolute lifetime ms (0: none); ARGV[3] '1' to slide;
-- ARGV[4] the owners' index prefix.
-- Returns the hash's fields and values, or false when there is no session (or it has outlived its lifetime).
local key = KEYS[1]
local created = created_of(key)
if not created then return false end
local life = life_ms(created, now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
if life <= 0 then
  redis.call('DEL', key)
  return false
end
if ARGV[3] == '1' then
  redis.call('PEXPIRE', key, life)
  local owner = redis.call('HGET', key, 'm:u')
  if owner then keep_index(ARGV[4] .. owner, life) end
end
return redis.call('HGETALL', key)
