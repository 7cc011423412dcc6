-- Keep a lease alive while its holder is still loading (a heartbeat); only while the lease is still ours: a lease
-- voided by a delete or a plain write, or taken over after it expired, is never brought back.  (The counters the
-- lease was taken under are checked and kept alive by the client, in the same round trip: counters.lua.)
-- KEYS[1] the lease.  ARGV[1] our token; ARGV[2] the lease TTL in ms.
-- Returns 1 when extended, 0 when the lease is not ours.
if not holds(get_string(KEYS[1]), ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
