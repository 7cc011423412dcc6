-- Write one cache entry stamped with the current values of the counters that can invalidate it.
-- KEYS[1] the entry; KEYS[2] the namespace version counter; KEYS[3] the group version counter;
-- KEYS[4..] one counter per tag.
-- ARGV[1] TTL in ms; ARGV[2] serializer code (1 byte); ARGV[3] extra header tokens ('' for none);
-- ARGV[4] the payload; ARGV[5..] the tags' tokens, in the order of KEYS[4..].
-- A missing counter is created with a value that no earlier incarnation of it can have had (the server's
-- clock in microseconds); every counter is kept alive at least as long as the entry, so that a counter can
-- only disappear once every entry stamped with it is gone.  Every key written here has a TTL.
local ttl = tonumber(ARGV[1])
local clock = redis.call('TIME')
local fresh = clock[1] .. string.format('%06d', clock[2])
local function stamp(key)
  local value = redis.call('GET', key)
  if not value then
    redis.call('SET', key, fresh, 'PX', ttl)
    return fresh
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return value
end
local written_ms = clock[1] .. string.format('%03d', math.floor(clock[2] / 1000))
local parts = {stamp(KEYS[2]), stamp(KEYS[3]), written_ms, ARGV[1], tostring(#KEYS - 3)}
for i = 4, #KEYS do
  parts[#parts + 1] = ARGV[i + 1]
  parts[#parts + 1] = stamp(KEYS[i])
end
if ARGV[3] ~= '' then parts[#parts + 1] = ARGV[3] end
local header = table.concat(parts, ' ')
redis.call('SET', KEYS[1], 'cw1' .. ARGV[2] .. string.format('%04x', #header) .. header .. ARGV[4], 'PX', ttl)
return 1
