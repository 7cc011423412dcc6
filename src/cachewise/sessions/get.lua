-- Read a session, renewing its idle TTL when sliding (never past its absolute lifetime).
-- KEYS[1] the session.  ARGV[1] idle TTL ms; ARGV[2] absolute lifetime ms (0: none); ARGV[3] '1' to slide.
-- Returns {life ms it was renewed for (0 when not renewed), field, value, ...}, or false when there is no session
-- (or it has outlived its lifetime).
local key = KEYS[1]
local created = created_of(key)
if not created then return false end
local life = life_ms(created, now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
if life <= 0 then
  redis.call('DEL', key)
  return false
end
local renewed = 0
if ARGV[3] == '1' then
  redis.call('PEXPIRE', key, life)
  renewed = life
end
local reply = redis.call('HGETALL', key)
table.insert(reply, 1, renewed)
return reply
