-- Give a session a new id and kill the old one, in one step: same data, same creation time (the absolute lifetime
-- still counts from it), same owner.  A rotation is a write: it renews the idle TTL (capped by the lifetime).
-- KEYS[1] the session under its old id; KEYS[2] under its new id (the same slot: a rotated id keeps the characters
-- that pick it).  ARGV[1] idle TTL ms; ARGV[2] absolute lifetime ms (0: none); ARGV[3] the owner the client expects
-- ('' for none: the client has put the new id in that owner's index first).
-- Returns {1, life ms} when rotated, {0} when there is no session under the old id, {-1} when the new id is taken,
-- {-3, the actual owner} when the session's owner is not the one expected (nothing done: ask again).
local old, new = KEYS[1], KEYS[2]
local created = created_of(old)
if not created then return {0} end
local life = life_ms(created, now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
if life <= 0 then
  redis.call('DEL', old)
  return {0}
end
local owner = owner_of(old)
if owner ~= ARGV[3] then return {-3, owner} end
if redis.call('EXISTS', new) == 1 then return {-1} end
redis.call('RENAME', old, new)
redis.call('PEXPIRE', new, life)
return {1, life}
