-- Write one entry stamped with the current values of the counters that can invalidate it.
-- KEYS[1] the entry; KEYS[2] the namespace version counter; KEYS[3] the group version counter; KEYS[4] the lease;
-- KEYS[5..] one counter per tag.
-- ARGV[1] TTL in ms; ARGV[2] grace in ms (kept that much longer, to be served stale); ARGV[3] serializer code;
-- ARGV[4] load time in ms; ARGV[5] extra header tokens ('' for none); ARGV[6] payload; ARGV[7] lease token ('' for
-- a plain write); ARGV[8] version ('' for none); ARGV[9] the fill channel; ARGV[10..] the tags' tokens.
-- A lease holder's value is stored only while its lease stands and no counter moved since it was taken
-- (returns 0: lease lost, -1: invalidated meanwhile).  A plain write voids any outstanding lease, so a slower
-- loader cannot overwrite it.  With a version, an entry holding a newer or equal version is kept (returns -2).
-- Every write that lands, and every lease that ends, is published on the fill channel to wake waiters.
local ttl, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local token = ARGV[7]
if token ~= '' then
  local lease = redis.call('GET', KEYS[4])
  if not lease or string.sub(lease, 1, #token + 1) ~= token .. ' ' then return 0 end
  local snapshot = string.gmatch(string.sub(lease, #token + 2), '%S+')
  for i = 2, #KEYS do
    if i ~= 4 and redis.call('GET', KEYS[i]) ~= snapshot() then
      redis.call('DEL', KEYS[4])
      redis.call('PUBLISH', ARGV[9], KEYS[1])
      return -1
    end
  end
end
if ARGV[8] ~= '' then
  local old = get_string(KEYS[1])
  if old and string.sub(old, 1, 3) == 'cw1' then
    local hlen = tonumber(string.sub(old, 5, 8), 16) or 0
    local held = num(string.match(string.sub(old, 9, 8 + hlen), ' v=(%d+)'))
    if held and held >= tonumber(ARGV[8]) then return -2 end
  end
end
local now_ms, fresh = server_clock()
local life = ttl + grace
-- Read every counter first and write the entry first: under maxmemory with noeviction the server refuses a script
-- whose first write would grow memory, and lets every later write through; so nothing may be written before it.
local counters = {KEYS[2], KEYS[3]}
for i = 5, #KEYS do counters[#counters + 1] = KEYS[i] end
local values, existed = {}, {}
for i, key in ipairs(counters) do values[i], existed[i] = counter_value(key, fresh) end
local parts = {values[1], values[2], string.format('%d', now_ms), ARGV[1], ARGV[2], ARGV[4], tostring(#KEYS - 4)}
for i = 5, #KEYS do
  parts[#parts + 1] = ARGV[i + 5]
  parts[#parts + 1] = values[i - 2]
end
if ARGV[8] ~= '' then parts[#parts + 1] = 'v=' .. ARGV[8] end
if ARGV[5] ~= '' then parts[#parts + 1] = ARGV[5] end
local header = table.concat(parts, ' ')
redis.call('SET', KEYS[1], 'cw1' .. ARGV[3] .. string.format('%04x', #header) .. header .. ARGV[6], 'PX', life)
for i, key in ipairs(counters) do ensure_counter(key, values[i], existed[i], life) end
redis.call('DEL', KEYS[4])
redis.call('PUBLISH', ARGV[9], KEYS[1])
return 1
