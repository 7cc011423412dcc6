-- Shared by the scripts that read or write entries (prepended to each of them when they are loaded).
--
-- An entry is 'cw1' .. serializer code (1 byte) .. header length (4 hex digits) .. header .. payload, where the
-- header is space-separated ASCII:
--   <namespace version> <group version> <written at, ms> <ttl, ms> <grace, ms> <load time, ms> <tag count>
--   [<tag> <tag version>]... [k=v]...
-- The versions are the *stamps*: the values the entry's counters had for the writer.  The counters live on their
-- own keys (on a Cluster, in their own slots), so no script here reads them: the client reads them with the entry
-- and judges, and passes the stamps it wants written or checked.  Every key a script touches is in its KEYS: the
-- entry and its lease, which share a hash slot.

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

-- An iterator over the header tokens of a cachewise entry, or nil when `raw` is not one of this format.
local function header_tokens(raw)
  if string.sub(raw, 1, 3) ~= 'cw1' then return nil end
  local hlen = tonumber(string.sub(raw, 5, 8), 16)
  if not hlen or 8 + hlen > #raw then return nil end
  return string.gmatch(string.sub(raw, 9, 8 + hlen), '%S+')
end

-- Whether `raw` is stamped exactly with the expected counter values: `ns`, `group`, and `tags` (tag token -> value)
-- for every tag it carries ('' never matches: the reader did not know that counter).  The reader's expectations come
-- from its own read of the counters.  A second result, true, says that the entry carries a tag not in `tags`.
local function stamps_match(raw, ns, group, tags)
  local next_token = header_tokens(raw)
  if not next_token then return false end
  if next_token() ~= ns or next_token() ~= group or ns == '' or group == '' then return false end
  for _ = 1, 4 do next_token() end  -- written, ttl, grace, load
  local ntags = num(next_token())
  if not ntags then return false end
  for _ = 1, ntags do
    local tag, version = next_token(), next_token()
    if not version then return false end
    if tags[tag] == nil then return false, true end
    if tags[tag] ~= version then return false end
  end
  return true
end

-- The write time (ms, as the header's text) of a cachewise entry, or nil.
local function entry_written(raw)
  local next_token = header_tokens(raw)
  if not next_token then return nil end
  next_token() next_token()
  return next_token()
end

-- Whether an entry is past its logical expiry (it is kept `grace` ms longer to be served stale).
local function entry_expired(raw, now_ms)
  local next_token = header_tokens(raw)
  if not next_token then return true end
  next_token() next_token()
  local written, ttl = num(next_token()), num(next_token())
  return not (written and ttl) or written + ttl <= now_ms
end

-- The server's clock in ms.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether the lease value `lease` (from GET) is held with `token`.
local function holds(lease, token)
  return lease and string.sub(lease, 1, #token + 1) == token .. ' '
end

-- Announce a fill of an entry: on the namespace's channel (PUBLISH), or, for a channel with a hash tag (a Cluster:
-- the entry's own shard channel, in its slot), with SPUBLISH, which reaches one shard instead of every node.
local function announce(channel, entry)
  if string.find(channel, '{', 1, true) then
    redis.call('SPUBLISH', channel, entry)
  else
    redis.call('PUBLISH', channel, entry)
  end
end
