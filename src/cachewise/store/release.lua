-- Give a lease back without a value (the loader failed): waiters are woken and one of them takes the next lease.
-- KEYS[1] the lease; ARGV[1] our token; ARGV[2] the fill channel; ARGV[3] the entry key (the message).
-- Returns 1 when the lease was ours.
local lease = redis.call('GET', KEYS[1])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
