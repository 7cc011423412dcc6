-- Create a session, or merge into / replace the data of an existing one; every write renews the idle TTL (capped by
-- the absolute lifetime).  Field-wise: keys not written are left as they are, so concurrent writes of different
-- keys never lose each other.
-- KEYS[1] the session.
-- ARGV[1] 'create' | 'merge' | 'replace'; ARGV[2] idle TTL ms; ARGV[3] absolute lifetime ms (0: none);
-- ARGV[4] create: the new lineage; otherwise the lineage the values were signed for ('' when not signed);
-- ARGV[5] the owner's token ('' to keep the owner); ARGV[6] n, the number of fields to set;
-- ARGV[7 .. 6 + 2n] field, value pairs; then the fields to delete.
-- Returns {1, the owner before this write ('' for none), the life ms it was given} when written; {0} when the session
-- is gone (or, for create, the id is taken).  The client keeps the owners' indexes (index.lua) in step.
local key, mode = KEYS[1], ARGV[1]
local now = now_ms()
local created, old_owner = now, ''
if mode == 'create' then
  if redis.call('EXISTS', key) == 1 then return {0} end
else
  created = created_of(key)
  if not created then return {0} end
  if ARGV[4] ~= '' and redis.call('HGET', key, 'm:l') ~= ARGV[4] then return {0} end
  old_owner = owner_of(key)
end
local life = life_ms(created, now, tonumber(ARGV[2]), tonumber(ARGV[3]))
if life <= 0 then
  redis.call('DEL', key)
  return {0}
end
local owner = ARGV[5]
local n = tonumber(ARGV[6])
local pairs_, written = {}, {}
for i = 7, 6 + 2 * n, 2 do
  pairs_[#pairs_ + 1] = ARGV[i]
  pairs_[#pairs_ + 1] = ARGV[i + 1]
  written[ARGV[i]] = true
end
if mode == 'create' then
  for _, item in ipairs({'m:c', tostring(now), 'm:l', ARGV[4]}) do pairs_[#pairs_ + 1] = item end
end
if owner ~= '' and owner ~= old_owner then
  pairs_[#pairs_ + 1] = 'm:u'
  pairs_[#pairs_ + 1] = owner
end
-- The first write is the one that grows memory: under maxmemory with noeviction the server refuses a script at its
-- first such write and lets every later one through, so nothing is deleted before it.
if #pairs_ > 0 then batched('HSET', key, pairs_) end
local stale = {}
for i = 7 + 2 * n, #ARGV do stale[#stale + 1] = ARGV[i] end
if mode == 'replace' then
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'd:' and not written[field] then stale[#stale + 1] = field end
  end
end
if #stale > 0 then batched('HDEL', key, stale) end
redis.call('PEXPIRE', key, life)
return {1, old_owner, life}
