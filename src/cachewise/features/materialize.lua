-- Replace whole entity hashes in one atomic step: readers see the old hash or the new one, never half of it, and
-- a feature absent from the new row is gone (DEL before HSET).  Every hash gets the TTL.
-- KEYS: one hash per entity.  ARGV: ttl_ms, updated_at, then per entity: n, field1, value1, ..., fieldn, valuen.
local ttl = ARGV[1]
local stamp = ARGV[2]
local pos = 3
for i = 1, #KEYS do
  local n = tonumber(ARGV[pos])
  redis.call('DEL', KEYS[i])
  -- unpack of a range of ARGV: no per-entity table to build
  redis.call('HSET', KEYS[i], 'updated_at', stamp, unpack(ARGV, pos + 1, pos + 2 * n))
  redis.call('PEXPIRE', KEYS[i], ttl)
  pos = pos + 1 + 2 * n
end
return #KEYS
