-- Increment one version or tag counter, making every entry stamped with its old value stale at once.
-- KEYS[1] the counter.  A counter that does not exist has no live entry stamped with it (counters.lua keeps every
-- counter alive as long as its entries), so there is nothing to invalidate and nothing is created.
-- Returns 1 when it was bumped, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('INCR', KEYS[1])
return 1
