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

-- tonumber() that accepts nil (Redis's Lua raises on tonumber(nil)).
local function num(text)
  if text == nil then return nil end
  return tonumber(text)
end

-- Whether `raw` is still valid: true, false (a counter it is stamped with has moved: stale), or nil (not a
-- cachewise entry of this format: the client counts it and replaces it).
local function entry_valid(raw, ns_key, group_key, tag_prefix)
  if string.sub(raw, 1, 3) ~= 'cw1' then return nil end
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  if not hlen or 8 + hlen > #raw then return nil end
  local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
  local ns_version, group_version = next_token(), next_token()
  local written, ttl, grace, load = num(next_token()), num(next_token()), next_token(), next_token()
  local ntags = num(next_token())
  if not (written and ttl and grace and load and ntags) then return nil end
  local current = redis.call('MGET', ns_key, group_key)
  if current[1] ~= ns_version or current[2] ~= group_version then return false end
  for _ = 1, ntags do
    local tag, version = next_token(), next_token()
    if not version then return nil end
    if get_string(tag_prefix .. tag) ~= version then return false end
  end
  return true
end

-- The write time (ms, as the header's text) of a cachewise entry, or nil.
local function entry_written(raw)
  if string.sub(raw, 1, 3) ~= 'cw1' then return nil end
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  if not hlen then return nil end
  local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
  next_token() next_token()
  return next_token()
end

-- Whether a valid entry is past its logical expiry (it is kept `grace` ms longer to be served stale).
local function entry_expired(raw, now_ms)
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  local next_token = string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
  next_token() next_token()
  local written, ttl = num(next_token()), num(next_token())
  return not (written and ttl) or written + ttl <= now_ms
end

-- The server's clock: {ms, a value no earlier incarnation of a counter can have had (µs)}.
local function server_clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t[1] .. string.format('%06d', t[2])
end

-- The value of a version or tag counter, and whether it exists; `fresh` when it does not (`ensure_counter` then
-- creates it).
local function counter_value(key, fresh)
  local value = get_string(key)
  if value then return value, true end
  return fresh, false
end

-- Create a counter that did not exist (with `value`), or keep one alive at least `ttl` ms, so that a counter can
-- only disappear once every entry and lease stamped with it is gone.
local function ensure_counter(key, value, existed, ttl)
  if not existed then
    redis.call('SET', key, value, 'PX', ttl)
  elseif redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- The value of a counter, created or kept alive as `ensure_counter` does.
local function counter(key, ttl, fresh)
  local value, existed = counter_value(key, fresh)
  ensure_counter(key, value, existed, ttl)
  return value
end
