-- Read one entry and check every counter it is stamped with, tags included (the client's fallback when an entry
-- has tags the caller did not name; the hot path is one MGET judged by the client).
-- KEYS[1] the entry; KEYS[2] the namespace version counter; KEYS[3] the group version counter.
-- ARGV[1] the prefix of the namespace's tag counters.
-- Returns the stored bytes, or false when the entry is missing or stale; bytes that are not an entry of ours are
-- returned as they are, for the client to count and replace.
local raw = get_string(KEYS[1])
if not raw then return false end
if entry_valid(raw, KEYS[2], KEYS[3], ARGV[1]) == false then return false end
return raw
