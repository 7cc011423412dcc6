-- Shared by the scripts that read or stamp entries (prepended to each of them when they are loaded).
--
-- An entry is 'cw1' .. serializer code (1 byte) .. header length (4 hex digits) .. header .. payload, where the
-- header is space-separated ASCII:
--   <namespace version> <group version> <written at, ms> <ttl, ms> <grace, ms> <load time, ms> <tag count>
--   [<tag> <tag version>]... [k=v]...

-- The value under `key`, or false when there is none or it is not a string (a key of another type under our name
-- is treated as absent; the next write replaces it).
local function get_string(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' then return false end
  return raw
end

-- Whether `raw` is still valid: true, false (a counter it is stamped with has moved: stale), or nil (not a
-- cachewise entry of this format: the client counts it and replaces it).
local function entry_valid(raw, ns_key, group_key, tag_prefix)
  if string.sub(raw, 1, 3) ~= 'cw1' then return nil end
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  if not hlen then return nil end
  local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
  local ns_version, group_version = next_token(), next_token()
  if not group_version then return nil end
  local current = redis.call('MGET', ns_key, group_key)
  if current[1] ~= ns_version or current[2] ~= group_version then return false end
  next_token() next_token() next_token() next_token() -- written at, ttl, grace, load time
  local ntags = tonumber(next_token()) or 0
  for _ = 1, ntags do
    local tag, version = next_token(), next_token()
    if redis.call('GET', tag_prefix .. tag) ~= version then return false end
  end
  return true
end

-- Whether a valid entry is past its logical expiry (it is kept `grace` ms longer to be served stale).
local function entry_expired(raw, now_ms)
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
  next_token() next_token()
  local written, ttl = tonumber(next_token()), tonumber(next_token())
  return written + ttl <= now_ms
end

-- The server's clock: {ms, a value no earlier incarnation of a counter can have had (µs)}.
local function server_clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t[1] .. string.format('%06d', t[2])
end

-- The value of a version or tag counter, created if missing and kept alive at least `ttl` ms, so that a counter
-- can only disappear once every entry and lease stamped with it is gone.
local function counter(key, ttl, fresh)
  local value = redis.call('GET', key)
  if not value then
    redis.call('SET', key, fresh, 'PX', ttl)
    return fresh
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return value
end
