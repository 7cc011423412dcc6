-- After a miss (or to refresh early): take the key's lease, or learn who holds it.  The lease of Facebook's
-- memcache ("Scaling Memcache at Facebook", NSDI 2013), on Redis: one caller loads, the others wait to be told.
-- KEYS[1] the entry; KEYS[2] the namespace version counter; KEYS[3] the group version counter; KEYS[4] the lease;
-- KEYS[5..] the counters of the entry's tags.
-- ARGV[1] tag counter prefix; ARGV[2] our token; ARGV[3] lease TTL in ms; ARGV[4] 'miss' or 'refresh';
-- ARGV[5] ('refresh') the write time in the header of the entry the caller read, '' when unknown.
-- 'miss': returns the entry when it became valid meanwhile; else {'L', token} when the lease is ours,
-- {'W', ms the current holder's lease has left}, or {'S'} when the last holder found the value too large to cache
-- (load, do not store, do not wait).  'refresh': {'L', token}, or false when someone holds it, or when the entry
-- was rewritten (or removed) since the caller read it: someone else's refresh already landed.
-- The lease records the counters as they are now; set.lua stores the holder's value only if they have not moved
-- (a version bump or a tag invalidation during the load would make that value stale).
local now_ms, fresh = server_clock()
if ARGV[4] == 'miss' then
  local raw = get_string(KEYS[1])
  if raw and entry_valid(raw, KEYS[2], KEYS[3], ARGV[1]) and not entry_expired(raw, now_ms) then
    return raw
  end
end
if ARGV[4] == 'refresh' and ARGV[5] ~= '' then
  local raw = get_string(KEYS[1])
  if not raw or entry_written(raw) ~= ARGV[5] then return false end
end
local holder = get_string(KEYS[4])
if holder then
  if ARGV[4] == 'refresh' then return false end
  if holder == 'skip' then return {'S'} end
  return {'W', redis.call('PTTL', KEYS[4])}
end
local ttl = tonumber(ARGV[3])
local snapshot = {ARGV[2]}
for i = 2, #KEYS do
  if i ~= 4 then snapshot[#snapshot + 1] = counter(KEYS[i], ttl, fresh) end
end
redis.call('SET', KEYS[4], table.concat(snapshot, ' '), 'PX', ttl)
return {'L', ARGV[2]}
