-- Replace whole entity hashes in one atomic step: readers see the old hash or the new one, never half of it, and
-- a feature absent from the new row is gone (DEL before HSET).  Every hash gets the TTL.
-- KEYS: one hash per entity.  ARGV: ttl_ms, updated_at, then per entity: n, field1, value1, ..., fieldn, valuen.
local ttl = ARGV[1]
local stamp = ARGV[2]
local pos = 3
for i = 1, #KEYS do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local args = {'updated_at', stamp}
  for j = 0, 2 * n - 1 do
    args[#args + 1] = ARGV[pos + j]
  end
  pos = pos + 2 * n
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], unpack(args))
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
