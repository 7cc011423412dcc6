-- Increment version or tag counters, making every entry stamped with their old values stale at once.
-- KEYS: the counters.  A counter that does not exist has no live entry stamped with it (set.lua keeps every
-- counter alive as long as its entries), so there is nothing to invalidate and nothing is created.
-- Returns how many counters were bumped.
local bumped = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCR', KEYS[i])
    bumped = bumped + 1
  end
end
return bumped
