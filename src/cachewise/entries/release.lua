-- Give a lease back without a value, and wake the waiters.  The loader failed, or a counter moved during its load:
-- one of them takes the next lease.  The value was too large to cache ('skip'): for the rest of the lease's time,
-- callers load for themselves without waiting (acquire.lua answers {'S'}) instead of taking turns.
-- KEYS[1] the lease.  ARGV[1] our token; ARGV[2] the fill channel; ARGV[3] the entry key (the message);
-- ARGV[4] 'skip' or ''.  Returns 1 when the lease was ours.
if not holds(get_string(KEYS[1]), ARGV[1]) then return 0 end
if ARGV[4] == 'skip' then
  redis.call('SET', KEYS[1], 'skip', 'KEEPTTL')
else
  redis.call('DEL', KEYS[1])
end
announce(ARGV[2], ARGV[3])
return 1
