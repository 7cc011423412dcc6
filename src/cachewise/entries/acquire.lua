-- After a miss (or to refresh early): take the key's lease, or learn who holds it.  The lease of Facebook's
-- memcache ("Scaling Memcache at Facebook", NSDI 2013), on Redis: one caller loads, the others wait to be told.
-- KEYS[1] the entry; KEYS[2] its lease (same slot).
-- ARGV[1] our token; ARGV[2] lease TTL in ms; ARGV[3] 'miss', 'read' or 'refresh'; ARGV[4] ('refresh') the write time
-- in the header of the entry the caller read, '' when unknown; ('miss', 'read') ARGV[4] and ARGV[5] the namespace and
-- group versions the caller expects ('' when unknown), then tag token, version pairs.
-- 'miss': returns the entry when it became valid meanwhile (stamped with the versions the caller read, and not past
-- its TTL); else {'L', token} when the lease is ours, {'W', ms the current holder's lease has left}, or {'S'} when
-- the last holder found the value too large to cache (load, do not store, do not wait).  'refresh': {'L', token}, or
-- false when someone holds the lease, or when the entry was rewritten (or removed) since the caller read it:
-- someone else's refresh already landed.
-- 'read' is the first read of a cache-aside call that expects a miss (the miss takes its lease in the same round
-- trip; the caller reads the counters beside it and judges the entry itself): {entry} when the entry is valid under
-- the versions expected, or carries a tag the caller did not name (no lease: the caller reads its tags); else {entry
-- or '', then 'miss''s answer}.
-- The lease holds '<token> ' and nothing else: the counters it was taken under are kept by the caller, which
-- stamps its write with them (a counter that moved during the load makes that write a miss for every reader).
local mode = ARGV[3]
local raw = false
if mode ~= 'refresh' then
  raw = get_string(KEYS[1])
  if raw then
    local tags = {}
    for i = 6, #ARGV, 2 do tags[ARGV[i]] = ARGV[i + 1] end
    local valid, unnamed = stamps_match(raw, ARGV[4], ARGV[5], tags)
    valid = valid and not entry_expired(raw, server_ms())
    if mode == 'read' and (valid or unnamed) then return {raw} end
    if valid then return raw end
  end
elseif ARGV[4] ~= '' then
  local found = get_string(KEYS[1])
  if not found or entry_written(found) ~= ARGV[4] then return false end
end
local answer
local holder = get_string(KEYS[2])
if holder then
  if mode == 'refresh' then return false end
  if holder == 'skip' then answer = {'S'} else answer = {'W', redis.call('PTTL', KEYS[2])} end
else
  redis.call('SET', KEYS[2], ARGV[1] .. ' ', 'PX', tonumber(ARGV[2]))
  answer = {'L', ARGV[1]}
end
if mode == 'read' then return {raw or '', answer[1], answer[2]} end
return answer
