-- Shared by the session scripts (prepended to each of them when they are loaded).
--
-- A session is one hash: a field 'd:<key>' per data key (its value: the serializer's code byte, then the payload,
-- signed when the cache signs), and metadata the API hides: 'm:c' (created at, server ms: the absolute lifetime
-- counts from it and rotation keeps it), 'm:l' (lineage: random, kept by rotation; signatures are bound to it) and
-- 'm:u' (the owner's token, when the session belongs to a user).  The owner's index is a set of session ids.

-- The server's clock in ms: every expiry is computed from it, so that the clients' clocks never matter.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- How long (ms) a session used at `now` may live: the idle TTL, capped by its absolute lifetime (`absolute`, 0 for
-- none) counted from `created`.  0 or less: it is past its absolute lifetime.
local function life_ms(created, now, idle, absolute)
  if absolute > 0 then
    local left = created + absolute - now
    if left < idle then return left end
  end
  return idle
end

-- The creation time of the session at `key`, or nil when there is none there (or a key that is no session).
local function created_of(key)
  local created = redis.pcall('HGET', key, 'm:c')
  if type(created) ~= 'string' then return nil end
  return tonumber(created)
end

-- Keep an owner's index alive at least `ttl` ms: as long as any session it lists can still live.
local function keep_index(index, ttl)
  if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
end

-- Add `sid` to an owner's index, first dropping the ids of its sessions that have expired.
local function index_add(index, sid, ttl, session_base)
  for _, member in ipairs(redis.call('SMEMBERS', index)) do
    if redis.call('EXISTS', session_base .. member) == 0 then redis.call('SREM', index, member) end
  end
  redis.call('SADD', index, sid)
  keep_index(index, ttl)
end

-- Run `command` on `key` with the items of `list`, in batches (Lua's unpack() has a stack limit).
local function batched(command, key, list)
  for i = 1, #list, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
  end
end
