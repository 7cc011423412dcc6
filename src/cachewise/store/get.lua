-- Read one cache entry and check, in the same call, that no invalidation has made it stale.
-- KEYS[1] the entry; KEYS[2] the namespace version counter; KEYS[3] the entry's group version counter.
-- ARGV[1] the prefix of the namespace's tag counters (a tag's token is appended to it).
-- Returns the stored bytes, or false when the entry is missing or stale.  A value that is not a cachewise
-- entry is returned as it is, so that the client can count it as foreign and replace it.
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
if string.sub(raw, 1, 3) ~= 'cw1' then return raw end
local hlen = tonumber(string.sub(raw, 5, 8), 16)
if not hlen then return raw end
local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
local ns_version, group_version = next_token(), next_token()
if not group_version then return raw end -- corrupt header: the client counts it and replaces it
local current = redis.call('MGET', KEYS[2], KEYS[3])
if current[1] ~= ns_version or current[2] ~= group_version then return false end
next_token() -- written at
next_token() -- ttl
local ntags = tonumber(next_token()) or 0
for _ = 1, ntags do
  local tag, version = next_token(), next_token()
  if redis.call('GET', ARGV[1] .. tag) ~= version then return false end
end
return raw
