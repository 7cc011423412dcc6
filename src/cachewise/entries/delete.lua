-- Delete an entry and void its outstanding lease, so that a loader that read the database before this delete
-- can never store its (now stale) result.
-- KEYS[1] the entry; KEYS[2] the lease.  ARGV[1] the fill channel (see announce in entry.lua).
-- Returns 1 when the entry existed.
local removed = redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then announce(ARGV[1], KEYS[1]) end
return removed
