-- Write one entry, stamped with the counter values the writer read (its lease's, or the latest it knows).
-- KEYS[1] the entry; KEYS[2] its lease (same slot).
-- ARGV[1] TTL in ms; ARGV[2] grace in ms (kept that much longer, to be served stale); ARGV[3] serializer code;
-- ARGV[4] load time in ms; ARGV[5] extra header tokens ('' for none); ARGV[6] payload; ARGV[7] lease token ('' for
-- a plain write); ARGV[8] version ('' for none); ARGV[9] the write id of an entry this write may replace whatever its
-- version ('' for none); ARGV[10] the fill channel; ARGV[11] the namespace version and ARGV[12] the group version to
-- stamp; ARGV[13..] tag token, tag version pairs.
-- A lease holder's value is stored only while its lease stands (returns 0: lease lost to a delete, a plain write or
-- its expiry).  A plain write voids any outstanding lease, so a slower loader cannot overwrite it.  With a version,
-- an entry holding a newer or equal version is kept (returns -2), unless it carries the write id ARGV[9] (a write
-- of the same call, stamped with counter values that turned out stale, being written again).  Every write that lands
-- is published on the fill channel to wake waiters.  The client keeps the counters alive at least as long as the
-- entry (counters.lua).
local token = ARGV[7]
if token ~= '' and not holds(get_string(KEYS[2]), token) then return 0 end
if ARGV[8] ~= '' then
  local old = get_string(KEYS[1])
  if old and header_tokens(old) then
    local hlen = tonumber(string.sub(old, 5, 8), 16)
    local header = string.sub(old, 9, 8 + hlen)
    local held = num(string.match(header, ' v=(%d+)'))
    if held and held >= tonumber(ARGV[8]) and (ARGV[9] == '' or string.match(header, ' w=(%S+)') ~= ARGV[9]) then
      return -2
    end
  end
end
local ttl, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local parts = {ARGV[11], ARGV[12], string.format('%d', server_ms()), ARGV[1], ARGV[2], ARGV[4],
               tostring((#ARGV - 12) / 2)}
for i = 13, #ARGV do parts[#parts + 1] = ARGV[i] end
if ARGV[8] ~= '' then parts[#parts + 1] = 'v=' .. ARGV[8] end
if ARGV[5] ~= '' then parts[#parts + 1] = ARGV[5] end
local header = table.concat(parts, ' ')
-- The first write of a script is the one a full server (maxmemory, noeviction) refuses: the entry comes first.
redis.call('SET', KEYS[1], 'cw1' .. ARGV[3] .. string.format('%04x', #header) .. header .. ARGV[6], 'PX', ttl + grace)
redis.call('DEL', KEYS[2])
announce(ARGV[10], KEYS[1])
return 1
