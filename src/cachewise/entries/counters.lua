-- Read version and tag counters, creating the missing ones and keeping each alive at least `life` ms, so that a
-- counter can only disappear once every entry and lease stamped with it is gone.
-- KEYS: the counters (each independent of the others: on a Cluster each is sent to its own slot with the same ARGV).
-- ARGV[1] life in ms; ARGV[2] the value of a counter created now: random, from the client, so that no earlier
-- incarnation of a counter can have had it (an entry stamped with an old value never becomes valid again).
-- Returns {values, lives}: the counters' values and their remaining lives in ms, in KEYS order.
-- A counter created or extended here gets twice `life`: the client remembers how long each counter it saw will live
-- (engine/writes.py, StampMemo), so the writes of the next `life` ms need not keep it alive again.
-- The missing counters are created before any TTL is extended: under maxmemory with noeviction the server refuses a
-- script at its first write that grows memory and lets every later write through, so a full server must meet a
-- creation first (and refuse the whole call) rather than after an extension.
local life = tonumber(ARGV[1])
local values, lives, existing = {}, {}, {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'string' then
    values[i] = value
    existing[#existing + 1] = i
  end
end
for i = 1, #KEYS do
  if not values[i] then  -- missing, or a key of another type under our name: replaced
    redis.call('SET', KEYS[i], ARGV[2], 'PX', 2 * life)
    values[i], lives[i] = ARGV[2], 2 * life
  end
end
for _, i in ipairs(existing) do
  local left = redis.call('PTTL', KEYS[i])
  if left < life then
    redis.call('PEXPIRE', KEYS[i], 2 * life)
    left = 2 * life
  end
  lives[i] = left
end
return {values, lives}
