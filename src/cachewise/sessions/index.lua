-- Keep one owner's index of sessions: add and remove session ids, and keep the index alive at least `ttl` ms (as
-- long as any session it lists can live).
-- KEYS[1] the owner's index (a set of session ids).  ARGV[1] ttl ms (0: leave its TTL as it is); ARGV[2..] '+<id>'
-- to add an id, '-<id>' to remove one.
-- Returns how many ids the index lists now.
local index, ttl = KEYS[1], tonumber(ARGV[1])
local kind = redis.call('TYPE', index)['ok']
if kind ~= 'set' and kind ~= 'none' then redis.call('DEL', index) end  -- not an index of ours: replaced
for i = 2, #ARGV do
  local op, sid = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if op == '+' then redis.call('SADD', index, sid) else redis.call('SREM', index, sid) end
end
if ttl > 0 and redis.call('EXISTS', index) == 1 and redis.call('PTTL', index) < ttl then
  redis.call('PEXPIRE', index, ttl)
end
return redis.call('SCARD', index)
