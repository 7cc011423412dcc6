-- Rate limiting: check every limit of one identity, then consume all of them or none, in one atomic step.
--
-- KEYS[i]   the state of limit i for the identity: one string, only ever written together with its TTL (SET ... PX)
--           by the same command, so that no crash, anywhere, can leave a key that lives forever.
-- ARGV[1]   the cost of the hit (a positive integer), or 0 for a peek (read-only: report what a hit of cost 1
--           would get, and write nothing).
-- ARGV[2 + 4 (i - 1) ...]  limit i: algorithm ('fw', 'sw' or 'tb'), limit, period (µs), burst (token bucket).
--
-- Time is the server's (TIME, µs), so that clients whose clocks disagree still agree on every decision.
-- Returns '<binding limit> <remaining> <retry_after, µs> <reset_after, µs>': the binding limit is its 1-based index,
-- negated when the hit is refused: for a refused hit, the refusing limit that frees up last; for an allowed one, the
-- limit with the least remaining.
--
-- States (a value that is not one of these, or a key of another type, counts as no state, and is replaced):
--   fixed_window    '<window number> <count>'                  (windows: multiples of the period since the epoch)
--   sliding_window  '<window number> <count> <count of the window before>'
--   token_bucket    '<theoretical arrival time, µs since 2024-01-01 UTC>'   (GCRA)
--
-- This runs on every request, so it is written for speed: one pass, no helper closures, no tables for one limit.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost = tonumber(ARGV[1])
local hit = cost > 0
local used = cost  -- what this call consumes (a peek reports the remaining as it is)
if not hit then cost = 1 end
local floor, ceil = math.floor, math.ceil
local since2024  -- the token bucket's clock, computed when needed
local n = #KEYS

local all = true
local best, best_remaining, best_retry, best_reset        -- the binding limit among those that allow
local worst, worst_remaining, worst_retry, worst_reset    -- the binding limit among those that refuse
local state1, ttl1    -- what to write: for one limit, in locals
local states, ttls    -- for several, in tables
if n > 1 then states, ttls = {}, {} end

for i = 1, n do
  local base = 2 + (i - 1) * 4
  local algorithm, limit, period = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local value = redis.pcall('GET', KEYS[i])
  if type(value) ~= 'string' then value = nil end  -- missing (false) or another type (an error table)
  local ok, remaining, retry, reset, state, ttl

  if algorithm == 'tb' then
    -- GCRA: the theoretical arrival time (TAT) of the next request at the steady rate.  A hit is allowed when, with
    -- its cost added, the TAT is at most burst x interval ahead of now.  The key expires when the TAT is reached
    -- (the bucket is full again: no state is the same state).  Times are µs since 2024-01-01 (smaller numbers than
    -- since 1970: a finer float, so that adding a few µs is exact), compared at the µs resolution of TIME.
    if not since2024 then since2024 = (tonumber(clock[1]) - 1704067200) * 1000000 + tonumber(clock[2]) end
    local interval = period / limit
    local capacity = tonumber(ARGV[base + 3]) * interval
    local backlog = value and tonumber(value)
    if backlog then backlog = backlog - since2024 end
    if not backlog or backlog ~= backlog or backlog < 0 or backlog > capacity + 1 then
      backlog = 0  -- no state, a full bucket, or a value no write of ours can have left (NaN, too far ahead)
    end
    local after = backlog + cost * interval
    if after > capacity + 0.5 then
      ok, retry, reset = false, ceil(after - capacity - 0.5), ceil(backlog)
      remaining = floor((capacity - backlog) / interval + 1e-9)
      if remaining < 0 then remaining = 0 end
    else
      if not hit then after = backlog end
      ok, retry, reset = true, 0, ceil(after)
      remaining = floor((capacity - after) / interval + 1e-9)
      if remaining < 0 then remaining = 0 end
      -- a number: SET stores it with 17 significant digits, so it reads back exactly
      state, ttl = since2024 + after, ceil(after / 1000)
    end

  else
    -- Fixed windows numbered from the epoch (the float division corrected for rounding).
    local w = floor(now / period)
    if w * period > now then w = w - 1 elseif (w + 1) * period <= now then w = w + 1 end
    local left = (w + 1) * period - now  -- µs to the end of this window

    if algorithm == 'fw' then
      local count = 0
      if value then
        local sw, sc = string.match(value, '^(%d+) (%d+)$')
        if sw and tonumber(sw) == w then count = tonumber(sc) end
      end
      if count + cost > limit then
        ok, retry, reset = false, left, left
        remaining = limit - count
        if remaining < 0 then remaining = 0 end
      else
        local after = count + used
        ok, retry, reset, remaining = true, 0, left, limit - after
        if after == 0 then reset = 0 end
        state, ttl = string.format('%d %d', w, count + cost), ceil(left / 1000)
      end

    elseif algorithm == 'sw' then
      -- Weighted two-window counter: estimate = this window's count + the previous window's count x the share of
      -- the previous window still inside the period ending now (left / period).  Compared in integers, exactly.
      local cur, prev = 0, 0
      if value then
        local sw, sc, sp = string.match(value, '^(%d+) (%d+) (%d+)$')
        if sw then
          sw = tonumber(sw)
          if sw == w then
            cur, prev = tonumber(sc), tonumber(sp)
          elseif sw == w - 1 then
            prev = tonumber(sc)
          end
        end
      end
      if (limit - cur - cost) * period < prev * left then
        ok = false
        if cur + cost <= limit then
          -- later in this window, once enough of the previous one has slid out (prev > 0 here)
          retry = ceil(period - (limit - cur - cost) * period / prev) - (period - left)
          if retry < 1 then retry = 1 end
        else
          -- in the next window, where this window's count becomes the previous one's (cur > 0 here)
          local wait = ceil(period - (limit - cost) * period / cur)
          if wait < 0 then wait = 0 end
          retry = left + wait
        end
        remaining = floor(((limit - cur) * period - prev * left) / period)
        if remaining < 0 then remaining = 0 end
        reset = cur > 0 and left + period or left
      else
        local after = cur + used
        ok = true
        retry, remaining = 0, floor(((limit - after) * period - prev * left) / period)
        if after > 0 then reset = left + period elseif prev > 0 then reset = left else reset = 0 end
        state, ttl = string.format('%d %d %d', w, cur + cost, prev), ceil((left + period) / 1000)
      end

    else
      return redis.error_reply('cachewise ratelimit: unknown algorithm ' .. tostring(algorithm))
    end
  end

  if ok then
    if not best or remaining < best_remaining then
      best, best_remaining, best_retry, best_reset = i, remaining, retry, reset
    end
    if states then states[i], ttls[i] = state, ttl else state1, ttl1 = state, ttl end
  else
    all = false
    if not worst or retry > worst_retry then
      worst, worst_remaining, worst_retry, worst_reset = i, remaining, retry, reset
    end
  end
end

-- One string, not a table: building a table reply costs the server more than the whole decision.
if not all then
  return string.format('%d %d %d %d', -worst, worst_remaining, worst_retry, worst_reset)
end
if hit then
  if states then
    for i = 1, n do
      redis.call('SET', KEYS[i], states[i], 'PX', ttls[i])
    end
  else
    redis.call('SET', KEYS[1], state1, 'PX', ttl1)
  end
end
return string.format('%d %d %d %d', best, best_remaining, best_retry, best_reset)
