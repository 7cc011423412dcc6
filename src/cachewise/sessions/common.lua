-- Shared by the session scripts (prepended to each of them when they are loaded).
--
-- A session is one hash: a field 'd:<key>' per data key (its value: the serializer's code byte, then the payload,
-- signed when the cache signs), and metadata the API hides: 'm:c' (created at, server ms: the absolute lifetime
-- counts from it and rotation keeps it), 'm:l' (lineage: random, kept by rotation; signatures are bound to it) and
-- 'm:u' (the owner's token, when the session belongs to a user).  An owner's index (a set of session ids) lives in a
-- slot of its own, so no script here touches it: the client sends index.lua beside these scripts.

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

-- The owner token of the session at `key`, or '' when it has none.
local function owner_of(key)
  local owner = redis.call('HGET', key, 'm:u')
  if type(owner) ~= 'string' then return '' end
  return owner
end

-- Run `command` on `key` with the items of `list`, in batches (Lua's unpack() has a stack limit).
local function batched(command, key, list)
  for i = 1, #list, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
  end
end
