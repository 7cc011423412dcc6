"""Rate limiting on the cache's server: the seed's ``INCR`` + ``EXPIRE`` limiter made atomic, plus a sliding window and
a token bucket.

>>> limiter = RateLimiter(cache, limit=100, period=60)                  # token bucket (GCRA), burst 100
>>> decision = limiter.hit("ip:203.0.113.9")
>>> decision.allowed, decision.remaining, decision.retry_after, decision.reset_after

Every hit is one call of one Lua script (``ratelimit.lua``, loaded once, called by SHA): it reads the server's clock
(``TIME``, so clients whose clocks disagree agree), checks *every* limit of the identity, and consumes all of them
or none (a request refused by one limit uses up no other).  Each limit of an identity is one key, written only with
its TTL in the same command (``SET ... PX``), so a client killed at any instant can never leave a key that lives
forever (the seed's limiter did: ``INCR``, crash, no ``EXPIRE``, that IP blocked for good).

The algorithms (``algorithm=``):

``fixed_window``
    A count per window; windows are aligned on multiples of the period since the epoch, so every process agrees on
    them.  At most ``limit`` per window, exactly; but up to ``2 × limit`` across a window edge (``limit`` at the end
    of one window and ``limit`` at the start of the next).
``sliding_window``
    Weighted two-window counter (O(1) memory: one key holding two counts).  It estimates the requests of the last
    period as ``count of this window + count of the previous window × the share of the previous window still inside
    the period ending now`` (it assumes the previous window's requests were evenly spread) and allows a hit while
    the estimate plus its cost is at most ``limit``.  **Worst-case error**, for any arrival pattern: it allows at
    most ``limit`` in each fixed window (so at most ``n × limit`` over n windows: the long-run rate is exact), and at
    most ``limit × (1 + f)`` in any span of one period that ends a fraction ``f`` (0 ≤ f < 1) into a window — so
    always fewer than ``2 × limit``, reached only when the previous window's requests all came at its very end.
    (The span holds at most the previous window's count ``p`` plus this window's count ``c``, and the last hit
    allowed satisfied ``c + p × (1 − f) ≤ limit``; so ``c + p ≤ limit + p × f ≤ limit × (1 + f)``.)  It errs the
    other way, refusing early, by at most ``p × (1 − f)`` when the previous window's requests came at its start.
    Evenly spread traffic is counted exactly.  Unlike a fixed window, the excess is admitted gradually: it cannot
    take ``2 × limit`` in an instant.
``token_bucket`` (the default)
    GCRA: one timestamp per key (the theoretical arrival time).  ``burst`` requests at once (default ``limit``), then
    one every ``period / limit``: in any span of ``d`` seconds at most ``burst + d × limit / period``, exactly, at
    the µs resolution of the server's clock (so at most 1,000,000 per second).  The key expires when the bucket is
    full again.

Each key lives as long as its state matters: a fixed window's until the window ends, a sliding window's until the
next one ends, a token bucket's until it is full again.  ``peek`` reports what a hit of cost 1 would get without
counting anything; ``reset`` forgets an identity (and raises :class:`~cachewise.errors.InvalidationError` when the
server could not be reached, as the cache's invalidations do).

Several limits at once (``limits=[Limit(10, 1), Limit(1000, 3600, algorithm="fixed_window")]``) cost one round trip.

When the server cannot be asked (down, timing out, or its circuit breaker open), the limiter does not raise: it
follows ``on_error``: ``"allow"`` (the default: fail open, as the cache does — a rate limiter must not take the
application down with the cache) or ``"deny"`` (fail closed, for limits that protect something costly, such as
login attempts).  Such decisions have ``degraded=True``; each is counted in the cache's stats (``errors``, or
``skipped`` when the breaker was open) and logged without flooding.

Keys: ``<namespace>:_cw:rl:<name>:<limit spec>:{<identity, percent-encoded>}``, e.g.
``shop:_cw:rl:api:tb100p60s:{ip%3A203.0.113.9}`` (the braces make the identity the hash tag: on a Cluster the limits
of one identity share a slot, checked in one script call).  The spec is in the key, so changing a limit starts it afresh
instead of misreading the old state.  :meth:`RateLimiter.reset` deletes an identity's keys by name (no ``KEYS``, no
``SCAN``).

Policy is pure (:mod:`~cachewise.ratelimit.policy`: limits, keys, arguments, what a reply means);
:class:`RateLimiter` (:mod:`~cachewise.ratelimit.limiter`) only sends the call.
"""

from .limiter import SCRIPT, RateLimiter
from .policy import (
    ALGORITHMS,
    MAX_IDENTITY_CHARS,
    MAX_PERIOD,
    MIN_PERIOD,
    ON_ERROR,
    Decision,
    Limit,
    decide,
    degraded,
    hit_args,
    identity_token,
    period_seconds,
    resolve_limits,
)

__all__ = [
    "ALGORITHMS",
    "MAX_IDENTITY_CHARS",
    "MAX_PERIOD",
    "MIN_PERIOD",
    "ON_ERROR",
    "SCRIPT",
    "Decision",
    "Limit",
    "RateLimiter",
    "decide",
    "degraded",
    "hit_args",
    "identity_token",
    "period_seconds",
    "resolve_limits",
]
