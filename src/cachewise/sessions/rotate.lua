-- Give a session a new id and kill the old one, in one step: same data, same creation time (the absolute lifetime
-- still counts from it), same owner.  A rotation is a write: it renews the idle TTL (capped by the lifetime).
-- KEYS[1] the session under its old id; KEYS[2] under its new id.
-- ARGV[1] idle TTL ms; ARGV[2] absolute lifetime ms (0: none); ARGV[3] the owners' index prefix; ARGV[4] the old
-- id; ARGV[5] the new id.
-- Returns 1 when rotated, 0 when there is no session under the old id, -1 when the new id is taken.
local old, new = KEYS[1], KEYS[2]
local created = created_of(old)
if not created then return 0 end
local life = life_ms(created, now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
if life <= 0 then
  redis.call('DEL', old)
  return 0
end
if redis.call('EXISTS', new) == 1 then return -1 end
local owner = redis.call('HGET', old, 'm:u')
if owner then redis.call('SADD', ARGV[3] .. owner, ARGV[5]) end  -- the only write that can grow memory: first
redis.call('RENAME', old, new)
redis.call('PEXPIRE', new, life)
if owner then
  redis.call('SREM', ARGV[3] .. owner, ARGV[4])
  keep_index(ARGV[3] .. owner, life)
end
return 1
