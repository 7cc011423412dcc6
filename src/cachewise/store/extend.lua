-- Keep a lease alive while its holder is still loading (a heartbeat), with the counters its snapshot names, so
-- that neither can expire under a long load.  Only while the lease is still ours: a lease voided by a delete, or
-- taken over after it expired, is never brought back.  When a counter moved (an invalidation during the load),
-- the holder's value would be refused anyway: the lease is given back at once and the waiters are woken.
-- KEYS as acquire.lua: the entry, the namespace and group version counters, the lease, the tag counters.
-- ARGV[1] our token; ARGV[2] the lease TTL in ms; ARGV[3] the fill channel.
-- Returns 1 when extended, 0 when the lease is not ours (or no longer worth holding).
local token = ARGV[1]
local ttl = tonumber(ARGV[2])
local lease = redis.call('GET', KEYS[4])
if not lease or string.sub(lease, 1, #token + 1) ~= token .. ' ' then return 0 end
local snapshot = string.gmatch(string.sub(lease, #token + 2), '%S+')
for i = 2, #KEYS do
  if i ~= 4 then
    if redis.call('GET', KEYS[i]) ~= snapshot() then
      redis.call('DEL', KEYS[4])
      redis.call('PUBLISH', ARGV[3], KEYS[1])
      return 0
    end
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
redis.call('PEXPIRE', KEYS[4], ttl)
return 1
