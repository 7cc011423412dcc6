-- After a miss (or to refresh early): take the key's lease, or learn who holds it.  The lease of Facebook's
-- memcache ("Scaling Memcache at Facebook", NSDI 2013), on Redis: one caller loads, the others wait to be told.
-- KEYS[1] the entry; KEYS[2] its lease (same slot).
-- ARGV[1] our token; ARGV[2] lease TTL in ms; ARGV[3] 'miss' or 'refresh'; ARGV[4] ('refresh') the write time in the
-- header of the entry the caller read, '' when unknown; ('miss') ARGV[4] and ARGV[5] the namespace and group
-- versions the caller read ('' when a counter was missing), then tag token, version pairs.
-- 'miss': returns the entry when it became valid meanwhile (stamped with the versions the caller read, and not past
-- its TTL); else {'L', token} when the lease is ours, {'W', ms the current holder's lease has left}, or {'S'} when
-- the last holder found the value too large to cache (load, do not store, do not wait).  'refresh': {'L', token}, or
-- false when someone holds the lease, or when the entry was rewritten (or removed) since the caller read it:
-- someone else's refresh already landed.
-- The lease holds '<token> ' and nothing else: the counters it was taken under are kept by the caller, which
-- stamps its write with them (a counter that moved during the load makes that write a miss for every reader).
local mode = ARGV[3]
if mode == 'miss' then
  local raw = get_string(KEYS[1])
  if raw then
    local tags = {}
    for i = 6, #ARGV, 2 do tags[ARGV[i]] = ARGV[i + 1] end
    if stamps_match(raw, ARGV[4], ARGV[5], tags) and not entry_expired(raw, server_ms()) then return raw end
  end
elseif ARGV[4] ~= '' then
  local raw = get_string(KEYS[1])
  if not raw or entry_written(raw) ~= ARGV[4] then return false end
end
local holder = get_string(KEYS[2])
if holder then
  if mode == 'refresh' then return false end
  if holder == 'skip' then return {'S'} end
  return {'W', redis.call('PTTL', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[1] .. ' ', 'PX', tonumber(ARGV[2]))
return {'L', ARGV[1]}
