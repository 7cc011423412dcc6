"""The seed's web stories: rate limiting (100 requests a minute per IP) and server-side sessions.

Rate limiting: the seed's ``INCR`` then ``EXPIRE`` is shown next to :class:`~cachewise.ratelimit.RateLimiter`: a
crash between its two commands leaves a counter with no TTL (that IP is blocked forever); the limiter's Lua script
never does.  Sessions: a login creates a session, reads renew its idle TTL, rotation at login kills the old id, and
logging out everywhere destroys every session of the user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console

from ..cache import Cache
from ..ratelimit import RateLimiter
from ..sessions import SessionStore
from .tables import TITLES, format_ms, new_table

__all__ = ["RateLimitResult", "SessionResult", "rate_limiting", "sessions"]


@dataclass(frozen=True)
class RateLimitResult:
    requests: int
    allowed: int
    refused: int
    retry_after: float
    mean_hit_ms: float
    naive_key_ttl_ms: int
    limiter_keys_without_ttl: int


def rate_limiting(console: Console, cache: Cache, requests: int = 150, limit: int = 100) -> RateLimitResult:
    """``requests`` requests from one IP against "100 requests per minute"."""
    limiter = RateLimiter(cache, limit=limit, period=60, algorithm="fixed_window", name="demo-ip")
    ip = "203.0.113.7"
    limiter.reset(ip)
    seconds, micros = cache.connection.sync.time()  # windows are aligned on the server's clock: do not let the
    left = 60 - (seconds + micros / 1e6) % 60  # burst straddle two of them (it would get 100 more)
    if left < 5:
        time.sleep(left + 0.05)
    allowed = refused = 0
    retry_after = 0.0
    started = time.perf_counter()
    for _ in range(requests):
        decision = limiter.hit(ip)
        if decision.allowed:
            allowed += 1
        else:
            refused += 1
            retry_after = decision.retry_after
    mean_ms = (time.perf_counter() - started) * 1000 / requests

    # The seed's version, and the crash between its two commands (the process dies after INCR, before EXPIRE).
    client = cache.connection.sync
    naive_key = cache.keyspace.entry("naive-rate:198.51.100.9")
    client.incr(naive_key)  # the seed's first command; the process dies here, before its EXPIRE
    naive_ttl = int(client.pttl(naive_key))
    client.delete(naive_key)  # the demo cleans up its own bug
    pattern = cache.keyspace.ratelimit_pattern
    without_ttl = sum(1 for key in client.scan_iter(match=pattern, count=1000) if client.pttl(key) == -1)

    result = RateLimitResult(requests, allowed, refused, retry_after, mean_ms, naive_ttl, without_ttl)
    table = new_table(TITLES[7], f"{requests} requests from one IP, limit {limit}/minute", "result")
    table.add_row("allowed", f"{allowed}")
    table.add_row("refused (HTTP 429)", f"{refused}, Retry-After {retry_after:.0f} s")
    table.add_row("time per check (one Lua call)", format_ms(mean_ms))
    table.add_row("seed's INCR + EXPIRE, crash in between: PTTL", f"{naive_ttl} (no TTL: blocked forever)")
    table.add_row("RateLimiter keys without a TTL", str(without_ttl))
    table.caption = "the count and its expiry are set in one atomic script; the server's clock decides the window"
    console.print(table)
    return result


@dataclass(frozen=True)
class SessionResult:
    id_chars: int
    renewed: bool
    old_id_dead_after_rotate: bool
    destroyed_everywhere: int
    mean_read_ms: float


def sessions(console: Console, cache: Cache) -> SessionResult:
    """A login, reads that renew it, rotation at login, and logout everywhere."""
    store = SessionStore(cache, ttl=1800, sliding=True, absolute_ttl=12 * 3600)
    first = store.create({"user_id": 7, "cart": [42]}, user_id="7")
    store.create({"user_id": 7}, user_id="7")  # the same user on another device
    ttl_before = cache.connection.sync.pttl(store.key(first))
    time.sleep(0.5)  # so that a renewal is visible in the PTTL (the story, not a cost)
    started = time.perf_counter()
    reads = 200
    for _ in range(reads):
        store.get(first)
    mean_ms = (time.perf_counter() - started) * 1000 / reads
    ttl_after = cache.connection.sync.pttl(store.key(first))
    rotated = store.rotate(first)
    old_dead = store.get(first) is None and rotated is not None and store.get(rotated) is not None
    destroyed = store.destroy_user("7")
    # Without renewals the TTL would have lost the 500 ms slept and more; a renewed one loses only the time since the
    # last read (PTTL counts whole ms, and a busy machine may pause between the two readings: hence the margin).
    renewed = ttl_after > ttl_before - 250
    result = SessionResult(len(first), renewed, old_dead, destroyed, mean_ms)
    table = new_table(TITLES[8], "session", "result")
    table.add_row("id", f"{len(first)} URL-safe characters from secrets (>= 128 bits), never from user data")
    table.add_row("read (renews the idle TTL, capped at 12 h)", format_ms(mean_ms))
    table.add_row("idle TTL renewed by reads", "yes" if result.renewed else "no")
    table.add_row("rotate at login: old id dead", "yes" if old_dead else "NO")
    table.add_row("logout everywhere (2 devices)", f"{destroyed} sessions destroyed, no KEYS/SCAN")
    table.caption = "a forged or unknown id is never adopted: the middleware issues a fresh one"
    console.print(table)
    return result
