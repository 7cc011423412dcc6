"""Rate limiting (issue #5): the seed's INCR + EXPIRE limiter made atomic, a sliding window and a token bucket.

What is checked, on the embedded Valkey and the system Redis, sync and async:

* each algorithm counts, refuses, reports remaining / retry_after / reset_after, takes a cost, peeks without
  counting, resets by key name (no KEYS, no SCAN), and replaces state it cannot read;
* several limits in one round trip, all or nothing;
* 4 processes (2 sync, 2 async) hammering one identity, 100 per 2 s: the fixed window allows exactly 100 in each
  window, the token bucket exactly its burst plus one per 20 ms, the sliding window stays within its documented bound;
* the seed's naive INCR-then-EXPIRE client killed between its two commands leaves a key that never expires; ours,
  killed at random instants, never does;
* a server that goes away: ``on_error="allow"`` fails open, ``"deny"`` fails closed, both counted; back after a
  restart (scripts reloaded).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis

from cachewise import Cache, ConfigurationError, InvalidationError, InvalidKeyError
from cachewise.ratelimit import (
    Decision,
    Limit,
    RateLimiter,
)
from cachewise.server.embedded import EmbeddedServer
from tests.modes import Mode

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
#: Slack for comparing the server's µs times, read back as float seconds (~1.7e9: a resolution of ~0.24 µs).
CLOCK_EPS = 1e-6


def server_seconds(raw: redis.Redis) -> float:
    seconds, micros = raw.time()
    return seconds + micros / 1e6


def wait_for_window_fraction(raw: redis.Redis, period: float, low: float, high: float) -> float:
    """Sleep until the server's clock is between ``low`` and ``high`` of a ``period``-long window; returns the time."""
    while True:
        now = server_seconds(raw)
        fraction = (now % period) / period
        if low <= fraction < high:
            return now
        time.sleep(min(0.05, ((low - fraction) % 1.0) * period))


def command_calls(raw: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def embedded(url: str) -> bool:
    """The session's own embedded server: only this test process uses it, so INFO counts are exact."""
    return url.startswith("unix://")


def test_rate_limiter_arguments(mode: Mode) -> None:
    cache = Cache("redis://127.0.0.1:1/0", namespace="rlargs")  # never connects
    try:
        limiter = mode(RateLimiter(cache, 100, timedelta(minutes=1)))
        assert limiter.limits == (Limit(100, 60),) and limiter.name == "default" and limiter.on_error == "allow"
        assert limiter.keys("ip:1") == ["rlargs:_cw:rl:default:tb100p60s:{ip%3A1}"]
        both = mode(RateLimiter(cache, limits=[Limit(10, 1), Limit(1000, 3600, algorithm="fixed_window")], name="api"))
        assert both.keys("u") == ["rlargs:_cw:rl:api:tb10p1s:{u}", "rlargs:_cw:rl:api:fw1000p3600s:{u}"]
        assert "10 per 1 s" in repr(both)
        with pytest.raises(ConfigurationError, match="name"):
            RateLimiter(cache, 1, 1, name="a:b")
        with pytest.raises(ConfigurationError, match="on_error"):
            RateLimiter(cache, 1, 1, on_error="open")
        with pytest.raises(ConfigurationError, match=r"takes a cachewise\.Cache"):
            RateLimiter(object(), 1, 1)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="can never be allowed"):
            both.hit("u", cost=11)
        with pytest.raises(InvalidKeyError, match="must be a str"):
            both.hit(["u"])  # type: ignore[arg-type]
        with pytest.raises(InvalidKeyError, match="must be a str"):
            both.hit(7)  # type: ignore[arg-type]
    finally:
        cache.close()


# -- one process, each server ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_counts_then_refuses(cache: Cache, raw: redis.Redis, algorithm: str, mode: Mode) -> None:
    limiter = mode(RateLimiter(cache, 5, 10, algorithm=algorithm))
    if algorithm != "token_bucket":  # not across a window edge (the window counts would restart)
        wait_for_window_fraction(raw, 10, 0.0, 0.8)
    # the server decided every hit below at an instant (of its clock, which the script reads) between t0 and t1
    t0 = server_seconds(raw)
    decisions = [limiter.hit("ip:1") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.retry_after == 0 and d.limit == 5 and d.policy == limiter.limits[0] for d in decisions)
    refused = limiter.hit("ip:1")
    t1 = server_seconds(raw)
    assert not refused.allowed and refused.remaining == 0 and not refused.degraded
    # to the end of the (epoch-aligned) window from the refusal: at least what was left at t1, at most at t0
    soonest, latest = 10 - t1 % 10 - CLOCK_EPS, 10 - t0 % 10 + CLOCK_EPS
    if algorithm == "fixed_window":
        assert refused.retry_after == refused.reset_after
        assert soonest <= refused.retry_after <= latest
    elif algorithm == "sliding_window":
        # the next window counts this one's 5 at weight (1 - f): one more fits once 5 (1 - f) <= 4, f >= 0.2
        assert soonest + 2 <= refused.retry_after <= latest + 2
        assert soonest + 10 <= refused.reset_after <= latest + 10
    else:
        # one every 10/5 s from the first hit: the next 2 s, and the bucket full 10 s, after it; the refusal came
        # between 0 and t1 - t0 after the first hit
        assert 2 - (t1 - t0) - CLOCK_EPS <= refused.retry_after <= 2
        assert 10 - (t1 - t0) - CLOCK_EPS <= refused.reset_after <= 10
    assert limiter.hit("ip:2").allowed, "another identity has its own count"


def test_the_clients_clock_plays_no_part(
    cache: Cache, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch, mode: Mode
) -> None:
    """Windows and buckets run on the server's TIME: a client whose clock is wildly off decides the same."""
    fixed = mode(RateLimiter(cache, 5, 10, algorithm="fixed_window"))
    bucket = mode(RateLimiter(cache, 5, 10))
    # not near a window's start: there, a clock in 1970 (on a window's edge) would see the same 10 s left
    wait_for_window_fraction(raw, 10, 0.1, 0.8)
    t0 = server_seconds(raw)
    monkeypatch.setattr(time, "time", lambda: 0.0)  # 1970
    decisions = [fixed.hit("u"), bucket.hit("u")]
    monkeypatch.undo()
    t1 = server_seconds(raw)
    # what was left of the server's window when it decided (between t0 and t1)
    assert 10 - t1 % 10 - CLOCK_EPS <= decisions[0].reset_after <= 10 - t0 % 10 + CLOCK_EPS
    assert decisions[1].reset_after == 2  # a fresh bucket is full again one interval (10 / 5 s) after a hit


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_retry_after_is_when_it_passes(cache: Cache, raw: redis.Redis, algorithm: str, mode: Mode) -> None:
    period = 1.0
    limiter = mode(RateLimiter(cache, 2, period, algorithm=algorithm, burst=1 if algorithm == "token_bucket" else None))
    if algorithm != "token_bucket":  # at least 0.65 s of the window left: the hits and the peek stay in it
        wait_for_window_fraction(raw, period, 0.05, 0.35)
    while limiter.hit("u").allowed:
        pass
    s0 = server_seconds(raw)
    refused = limiter.hit("u")
    again = limiter.peek("u")
    s1 = server_seconds(raw)
    assert not refused.allowed and 0 < refused.retry_after <= 2 * period
    # the peek came between 0 and s1 - s0 after the refused hit: its wait is shorter by exactly that time
    assert not again.allowed
    assert refused.retry_after - (s1 - s0) - CLOCK_EPS <= again.retry_after <= refused.retry_after
    time.sleep(again.retry_after + 0.01)
    assert limiter.hit("u").allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cost(cache: Cache, raw: redis.Redis, algorithm: str, mode: Mode) -> None:
    limiter = mode(RateLimiter(cache, 5, 30, algorithm=algorithm))
    if algorithm != "token_bucket":
        wait_for_window_fraction(raw, 30, 0.0, 0.98)
    assert limiter.hit("u", cost=3).remaining == 2
    refused = limiter.hit("u", cost=3)
    assert not refused.allowed and refused.remaining == 2, "a refused hit consumes nothing"
    assert limiter.hit("u", cost=2).remaining == 0
    with pytest.raises(ConfigurationError, match="can never be allowed"):
        limiter.hit("u", cost=6)
    with pytest.raises(ConfigurationError, match="cost must be"):
        limiter.hit("u", cost=0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_peek_counts_nothing(cache: Cache, raw: redis.Redis, algorithm: str, mode: Mode) -> None:
    limiter = mode(RateLimiter(cache, 3, 30, algorithm=algorithm))
    if algorithm != "token_bucket":
        wait_for_window_fraction(raw, 30, 0.0, 0.98)
    fresh = limiter.peek("u")
    assert fresh.allowed and fresh.remaining == 3 and fresh.reset_after == 0
    assert list(raw.scan_iter(match=cache.keyspace.internal + "rl:*")) == [], "a peek writes nothing"
    for _ in range(10):
        assert limiter.peek("u").remaining == 3
    assert limiter.hit("u").remaining == 2
    assert limiter.peek("u").remaining == 2
    limiter.hit("u", cost=2)
    exhausted = limiter.peek("u")
    assert not exhausted.allowed and exhausted.remaining == 0 and exhausted.retry_after > 0


def test_several_limits_in_one_round_trip_all_or_nothing(
    cache: Cache, raw: redis.Redis, server_url: str, mode: Mode
) -> None:
    wait_for_window_fraction(raw, 60, 0.0, 0.99)
    per_second = Limit(100, 60)
    strict = Limit(3, 60, "fixed_window")
    sliding = Limit(4, 60, "sliding_window")
    limiter = mode(RateLimiter(cache, limits=[per_second, strict, sliding], name="multi"))
    # one limiter per limit, on the same keys
    alone = {lim: mode(RateLimiter(cache, limits=[lim], name="multi")) for lim in (per_second, strict, sliding)}
    before = command_calls(raw, "evalsha")
    decisions = [limiter.hit("u") for _ in range(3)]
    if embedded(server_url):
        assert command_calls(raw, "evalsha") - before == 3, "one script call per hit, whatever the limits"
    assert all(d.allowed for d in decisions)
    assert [(d.policy, d.remaining) for d in decisions] == [(strict, 2), (strict, 1), (strict, 0)]
    for _ in range(5):
        refused = limiter.hit("u")
        assert not refused.allowed and refused.policy == strict and refused.limit == 3
    # refused by the fixed window, so nothing was taken from the others
    assert alone[per_second].peek("u").remaining == 97
    assert alone[sliding].peek("u").remaining == 1
    # the other way round: the sliding window refuses after its 4th, the fixed window is untouched by it
    other = mode(RateLimiter(cache, limits=[sliding, Limit(10, 60, "fixed_window")], name="multi2"))
    assert [other.hit("v").allowed for _ in range(6)] == [True] * 4 + [False] * 2
    assert other.hit("v").policy == sliding
    assert mode(RateLimiter(cache, limits=[Limit(10, 60, "fixed_window")], name="multi2")).peek("v").remaining == 6


def test_refused_by_two_limits_reports_the_later(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    wait_for_window_fraction(raw, 1, 0.0, 0.8)
    quick, slow = Limit(1, 1, "fixed_window"), Limit(1, 3600)
    limiter = mode(RateLimiter(cache, limits=[quick, slow]))
    assert limiter.hit("u").allowed
    refused = limiter.hit("u")
    assert refused.policy == slow and refused.retry_after > 3000


def test_reset_deletes_by_name_without_keys_or_scan(
    cache: Cache, raw: redis.Redis, server_url: str, mode: Mode
) -> None:
    limiter = mode(
        RateLimiter(cache, limits=[Limit(2, 60), Limit(2, 60, "fixed_window"), Limit(2, 60, "sliding_window")])
    )
    other = mode(RateLimiter(cache, 2, 60, name="other"))
    for _ in range(3):
        limiter.hit("ip:1")
        other.hit("ip:1")
    assert not limiter.peek("ip:1").allowed
    calls = {c: command_calls(raw, c) for c in ("keys", "scan", "del")}
    limiter.reset("ip:1")
    if embedded(server_url):
        assert command_calls(raw, "keys") == calls["keys"] and command_calls(raw, "scan") == calls["scan"]
        assert command_calls(raw, "del") == calls["del"] + 1
    assert all(raw.exists(k) == 0 for k in limiter.keys("ip:1"))
    assert limiter.hit("ip:1").remaining == 1
    assert not other.peek("ip:1").allowed, "another limiter's count of the same identity is kept"
    limiter.reset("never-seen")  # nothing to delete is fine


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_key_has_a_ttl_and_a_known_name(cache: Cache, raw: redis.Redis, algorithm: str, mode: Mode) -> None:
    limiter = mode(RateLimiter(cache, 10, 30, algorithm=algorithm, name="api"))
    wait_for_window_fraction(raw, 30, 0.0, 0.98)
    identity = "user:7 / é"
    for _ in range(12):
        limiter.hit(identity)
    keys = list(raw.scan_iter(match=cache.keyspace.internal + "rl:*"))
    code = {"fixed_window": "fw", "sliding_window": "sw", "token_bucket": "tb"}[algorithm]
    assert [k.decode() for k in keys] == [f"{cache.namespace}:_cw:rl:api:{code}10p30s:{{user%3A7%20%2F%20%C3%A9}}"]
    ttl = raw.pttl(keys[0]) / 1000
    longest = {"fixed_window": 30, "sliding_window": 60, "token_bucket": 30}[algorithm]  # sliding: 2 windows
    assert 0 < ttl <= longest


async def test_scripts_flushed_by_the_server_are_loaded_again(embedded_url: str, unique_namespace: str) -> None:
    """On the suite's own embedded server (SCRIPT FLUSH is not something to do to a shared one)."""
    raw = redis.Redis.from_url(embedded_url)
    cache = Cache(embedded_url, namespace=unique_namespace)
    try:
        limiter = RateLimiter(cache, 3, 30)
        assert limiter.hit("u").remaining == 2
        raw.script_flush()
        assert limiter.hit("u").remaining == 1
        raw.script_flush()
        assert (await limiter.ahit("u")).remaining == 0
        raw.script_flush()
        assert not limiter.peek("u").allowed
        assert cache.stats().total.errors == 0
    finally:
        cache.clear()
        await cache.aclose()
        raw.close()


def test_identities_never_collide(cache: Cache, mode: Mode) -> None:
    limiter = mode(RateLimiter(cache, 1, 30))
    for identity in ("a:b", "a%3Ab", "a b", "a+b", "", "a:b:"):
        assert limiter.hit(identity).allowed, identity


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("junk", ["hash", b"garbage", b"nan", b"9e99", b"-5", b"12 x", b"99999999999999 99999"])
def test_state_it_cannot_read_is_replaced(
    cache: Cache, raw: redis.Redis, algorithm: str, junk: Any, mode: Mode
) -> None:
    limiter = mode(RateLimiter(cache, 3, 30, algorithm=algorithm))
    key = limiter.keys("u")[0]
    if junk == "hash":
        raw.hset(key, "f", "v")
    else:
        raw.set(key, junk)  # no TTL: the hit must give it one
    decision = limiter.hit("u")
    assert decision.allowed and not decision.degraded
    assert raw.type(key) == b"string" and raw.pttl(key) > 0


async def test_async_twins(cache: Cache, raw: redis.Redis) -> None:
    wait_for_window_fraction(raw, 30, 0.0, 0.98)
    limiter = RateLimiter(cache, limits=[Limit(3, 30), Limit(5, 30, "fixed_window"), Limit(4, 30, "sliding_window")])
    assert (await limiter.apeek("u")).remaining == 3
    decisions = [await limiter.ahit("u") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert (await limiter.ahit("w", cost=2)).remaining == 1
    await limiter.areset("u")
    assert (await limiter.apeek("u")).remaining == 3
    assert limiter.peek("u") == await limiter.apeek("u")
    results = await asyncio.gather(*(limiter.ahit("many") for _ in range(20)))
    assert sum(d.allowed for d in results) == 3
    assert sorted(d.remaining for d in results if d.allowed) == [0, 1, 2]


# -- the sliding window's bound is tight, and holds -----------------------------------------------------------------
def test_sliding_window_worst_case_is_the_documented_bound(cache: Cache, raw: redis.Redis) -> None:
    """The adversary of the weighted two-window counter: the whole limit at the end of one window, then steady
    traffic.  The span of one period ending a fraction f into the next window then holds limit × (1 + f) allowed
    hits: the documented worst case, reached and never exceeded."""
    limit, period = 50, 1.0
    limiter = RateLimiter(cache, limit, period, algorithm="sliding_window")
    # the burst late in a window, with 400 ms to spare for it (it takes a few ms, unless the machine stalls)
    burst_window = math.floor(wait_for_window_fraction(raw, period, 0.55, 0.6) / period)
    allowed: list[tuple[float, float]] = []  # (sent, answered) of each allowed hit; the server decided in between
    refused: list[tuple[float, float]] = []
    for _ in range(limit):
        sent = time.time()
        assert limiter.hit("u").allowed
        allowed.append((sent, time.time()))
    assert math.floor(server_seconds(raw) / period) == burst_window, "the burst must fit in the window's end"
    end = (burst_window + 1.5) * period  # half-way through the next window
    while time.time() < end:
        sent = time.time()
        decision = limiter.hit("u")
        (allowed if decision.allowed else refused).append((sent, time.time()))
    # the span of one period ending at `end`, f = 0.5 into the next window: the hits surely decided in it
    in_span = [(s, a) for s, a in allowed if s >= end - period and a <= end]
    bound = math.floor(limit * (1 + (end % period) / period))
    # reached: a hit refused at a fraction f of the next window (count + 1 > limit - burst × (1 - f)) means that
    # window had already allowed floor(limit × f); the last refusal before `end` says how many the span holds at least
    # (it is a few µs before `end`, unless the machine stalled: then the bound it gives is lower, and still exact)
    next_window = (burst_window + 1) * period
    last_refused = max((s for s, a in refused if s >= next_window and a <= end), default=next_window)
    reached = limit + math.floor(limit * max(0.0, last_refused - CLOCK_EPS - next_window) / period)
    assert reached <= len(in_span) <= bound, f"{len(in_span)} in the span, not between {reached} and {bound}"
    # at most the limit in any window: count the hits surely decided in one (sent and answered in it)
    surely = Counter(math.floor(s / period) for s, a in allowed if math.floor(s / period) == math.floor(a / period))
    assert max(surely.values()) <= limit


# -- 4 processes, one identity --------------------------------------------------------------------------------------
LIMIT, PERIOD, DURATION = 100, 2.0, 6.0
INTERVAL = PERIOD / LIMIT  # the token bucket's refill


def _hammer(url: str, namespace: str, use_async: bool, ready: Any, go: Any, out: Any) -> None:
    """One worker (spawned): every algorithm in turn on one identity until the deadline; reports each allowed hit as
    (algorithm, sent, answered, remaining, reset_after), the first and the last refused hit of each algorithm among
    those sent and answered in the same window, as (algorithm, sent, answered), and the refused counts."""
    cache = Cache(url, namespace=namespace, timeout=5.0)
    limiters = {a: RateLimiter(cache, LIMIT, PERIOD, algorithm=a, name="hammer") for a in ALGORITHMS}
    allowed: list[tuple[str, float, float, int, float]] = []
    refusals: dict[tuple[str, int], list[tuple[str, float, float]]] = {}  # (algorithm, window): [first, last]
    refused: Counter[str] = Counter()
    problems: list[str] = []

    def record(algorithm: str, sent: float, decision: Decision) -> None:
        if decision.degraded:
            problems.append(repr(decision))
        elif decision.allowed:
            allowed.append((algorithm, sent, time.time(), decision.remaining, decision.reset_after))
        else:
            answered = time.time()
            refused[algorithm] += 1
            window = math.floor(sent / PERIOD)
            if window == math.floor(answered / PERIOD):
                kept = refusals.setdefault((algorithm, window), [])
                kept[1:] = [(algorithm, sent, answered)]  # kept[0] stays the first, kept[-1] is the last

    async def run_async() -> None:
        for limiter in limiters.values():
            await limiter.apeek("warm-up")
        ready.put(os.getpid())
        start_at = go.get(timeout=60)
        while time.time() < start_at:
            await asyncio.sleep(0.0005)
        while time.time() < start_at + DURATION:
            for algorithm, limiter in limiters.items():
                sent = time.time()
                record(algorithm, sent, await limiter.ahit("one"))
        await cache.aclose()

    if use_async:
        asyncio.run(run_async())
    else:
        for limiter in limiters.values():
            limiter.peek("warm-up")
        ready.put(os.getpid())
        start_at = go.get(timeout=60)
        while time.time() < start_at:
            time.sleep(0.0005)
        while time.time() < start_at + DURATION:
            for algorithm, limiter in limiters.items():
                sent = time.time()
                record(algorithm, sent, limiter.hit("one"))
        cache.close()
    out.put((allowed, [r for kept in refusals.values() for r in kept], dict(refused), problems))


Hammered = tuple[
    list[tuple[str, float, float, int, float]],  # allowed hits: (algorithm, sent, answered, remaining, reset_after)
    list[tuple[str, float, float]],  # some refused hits (see _hammer): (algorithm, sent, answered)
    float,  # start
    float,  # end
    tuple[float, dict[str, int]],  # the server's time after the run, and the PTTL of each limiter key then
]


def _run_hammer(url: str, namespace: str, raw: redis.Redis) -> Hammered:
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(url, namespace, i % 2 == 1, ready, go, out), daemon=True) for i in range(4)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        # start half a period past a window boundary, so the run always covers DURATION / PERIOD - 1 whole windows
        # (a start a few ms before a boundary left only one whole window, and the test failed about one run in 100)
        start_at = (math.floor((time.time() + 0.2) / PERIOD) + 1) * PERIOD + PERIOD / 2
        for _ in procs:
            go.put(start_at)
        results = [out.get(timeout=60) for _ in procs]
        # the keys as the run left them, at once (keys expire: the token bucket's when it is full again, 2 s on)
        ttls = {k.decode(): raw.pttl(k) for k in raw.scan_iter(match=f"{namespace}:_cw:rl:*", count=1000)}
        looked = server_seconds(raw)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    records = [r for allowed, _, _, _ in results for r in allowed]
    refusals = [r for _, refusals, _, _ in results for r in refusals]
    problems = [p for _, _, _, problems in results for p in problems]
    assert not problems, problems[:3]
    assert all(sum(refused.values()) > 1000 for _, _, refused, _ in results), "every worker must keep hammering"
    return records, refusals, start_at, start_at + DURATION, (looked, ttls)


@pytest.mark.slow
def test_four_processes_get_exactly_the_limit(server_url: str, unique_namespace: str, raw: redis.Redis) -> None:
    """Each decision was made by the server at an instant between the hit's sent and answered times (same clock):
    every bound below holds whatever the latencies; a stalled machine only widens the brackets."""
    records, refusals, start, end, (looked, ttls) = _run_hammer(server_url, unique_namespace, raw)
    by = {a: [r for r in records if r[0] == a] for a in ALGORITHMS}
    refused_by = {a: sorted((s, ans) for alg, s, ans in refusals if alg == a) for a in ALGORITHMS}
    # windows (aligned on multiples of the period since the epoch) that the hammering covered entirely
    full = [
        w
        for w in range(math.floor(start / PERIOD), math.floor(end / PERIOD) + 1)
        if w * PERIOD >= start + 0.01 and (w + 1) * PERIOD <= end - 0.01
    ]
    assert len(full) >= 2

    # fixed window: which window the server counted a hit in is where its reset_after points (the window's end)
    fixed = by["fixed_window"]
    windows: dict[int, list[int]] = {}
    for _, sent, _, remaining, reset_after in fixed:
        windows.setdefault(round((sent + reset_after) / PERIOD) - 1, []).append(remaining)
    for remainders in windows.values():
        assert len(remainders) <= LIMIT
        assert sorted(remainders) == list(range(LIMIT - len(remainders), LIMIT)), "each count given out once"
    assert [len(windows.get(w, [])) for w in full] == [LIMIT] * len(full), "exactly the limit in every window"

    # token bucket (GCRA): the burst, then exactly one per interval.  A hit that found the bucket full reports a
    # reset_after of exactly one interval: the first, and any other only if the whole machine stalled right after it
    # (the refill while the bucket is full is lost).  From the last of them (`full_at` at the latest), the k-th hit
    # is allowed at the earliest when k - 1 intervals have passed, less the burst; and a refusal means every token
    # up to then was given out: the count at a refusal is exact, up to the refusal's latency.
    bucket = by["token_bucket"]
    first_sent, last_answered = min(r[1] for r in bucket), max(r[2] for r in bucket)
    full_at = max(r[2] for r in bucket if r[4] < INTERVAL + CLOCK_EPS / 2)
    after_burst = [(s, a) for s, a in refused_by["token_bucket"] if s >= full_at]
    assert after_burst, "the bucket must run dry"
    (first_refused, first_refused_answered), (last_refused, last_refused_answered) = after_burst[0], after_burst[-1]
    low = LIMIT + math.floor((last_refused - full_at) / INTERVAL) - 1
    high = LIMIT + math.floor((last_answered - first_sent) / INTERVAL)
    assert low <= len(bucket) <= high
    # the harness must pin the count down (a few hits, when no hit of these waited long)
    assert (full_at - first_sent) + (last_answered - last_refused) < PERIOD / 4, "the clocks must pin the count down"
    burst = [r[3] for r in bucket if r[2] < first_sent + INTERVAL]  # surely before the first refill
    assert len(burst) <= LIMIT and len(set(burst)) == len(burst), "no two hits of the burst saw the same count"
    # after the burst, the rate is the limit: between its first and last refusals, one per interval that passed
    surely = sum(1 for r in bucket if r[1] >= first_refused_answered and r[2] <= last_refused)
    possibly = sum(1 for r in bucket if r[2] >= first_refused and r[1] <= last_refused_answered)
    assert surely <= math.ceil((last_refused_answered - first_refused) / INTERVAL) + 1
    assert possibly >= math.floor((last_refused - first_refused_answered) / INTERVAL) - 1
    assert (first_refused_answered - first_refused) + (last_refused_answered - last_refused) < PERIOD / 4

    # sliding window: hits surely inside a window (sent and answered in it) never exceed the limit; every span of
    # one period holds at most limit × (1 + f); and the long-run rate is the limit
    sliding = by["sliding_window"]
    surely_in = Counter(
        math.floor(s / PERIOD) for _, s, a, _, _ in sliding if math.floor(s / PERIOD) == math.floor(a / PERIOD)
    )
    assert max(surely_in.values()) <= LIMIT
    for w in full:  # under saturation each window ends within a hit of the limit
        possibly = sum(1 for _, s, a, _, _ in sliding if s < (w + 1) * PERIOD and a >= w * PERIOD)
        # a refusal at a fraction f of the window (count + 1 > limit - previous × (1 - f), previous <= limit) means
        # the window had allowed floor(limit × f) by then: the last refusal surely in it says how many at least
        last = max(
            (s for s, a in refused_by["sliding_window"] if w * PERIOD <= s and a < (w + 1) * PERIOD),
            default=w * PERIOD,
        )
        least = math.floor(LIMIT * max(0.0, last - CLOCK_EPS - w * PERIOD) / PERIOD)
        assert possibly >= least, (w, possibly, least)
    for _, s, _, _, _ in sliding:
        inside = sum(1 for _, s2, a2, _, _ in sliding if s2 >= s - PERIOD and a2 <= s)
        assert inside <= LIMIT * (1 + (s % PERIOD) / PERIOD)
    touched = math.floor(end / PERIOD) - math.floor(start / PERIOD) + 1
    assert LIMIT * len(full) <= len(sliding) + 5 * len(full) and len(sliding) <= LIMIT * touched

    # afterwards (as the run left them: see _run_hammer) every limiter key has a TTL
    expected = {f"{unique_namespace}:_cw:rl:hammer:{code}100p2s:{{one}}" for code in ("fw", "sw", "tb")}
    assert set(ttls) <= expected, "the warm-up peeks wrote nothing"
    assert all(ttl != -1 for ttl in ttls.values()), "a key without a TTL"
    # and every key still has its state, unless it may have expired already: a fixed window's with its window, a
    # sliding window's with the next, a token bucket's when it is full again (each hit's sent + reset_after)
    expires = {
        "fw": (max(math.floor(r[1] / PERIOD) for r in fixed) + 1) * PERIOD,
        "sw": (max(math.floor(r[1] / PERIOD) for r in sliding) + 2) * PERIOD,
        "tb": max(r[1] + r[4] for r in bucket),
    }
    alive = {f"{unique_namespace}:_cw:rl:hammer:{code}100p2s:{{one}}" for code, at in expires.items() if looked < at}
    assert alive <= {k for k, ttl in ttls.items() if ttl > 0}, (looked, expires, ttls)
    assert {k for k in expected if ":tb" in k or ":sw" in k} <= alive, "the harness must look at the keys in time"


# -- crashes between calls ------------------------------------------------------------------------------------------
NAIVE = """
import os, signal, sys, redis
r = redis.Redis.from_url(sys.argv[1])
if r.incr(sys.argv[2]) == 1:          # the seed: INCR, then EXPIRE when the count is 1...
    os.kill(os.getpid(), signal.SIGKILL)   # ...and the process dies in between
    r.expire(sys.argv[2], 60)
"""

OURS = """
import itertools, sys
from cachewise import Cache
from cachewise.ratelimit import Limit, RateLimiter
cache = Cache(sys.argv[1], namespace=sys.argv[2], timeout=5.0)
limits = [Limit(5, 30), Limit(10, 86400, "fixed_window"), Limit(20, 86400, "sliding_window")]
limiter = RateLimiter(cache, limits=limits)
for i in itertools.count():
    limiter.hit(f"ip-{i % 50}", cost=1 + i % 3)
    if i == 200:
        print("running", flush=True)
"""


@pytest.mark.one_server("the seed's naive limiter, on one plain connection")
def test_the_seeds_limiter_killed_between_its_commands_leaves_a_key_forever(raw: redis.Redis, server_url: str) -> None:
    key = f"naive-{uuid.uuid4().hex}:ip:1.2.3.4"
    try:
        proc = subprocess.run([sys.executable, "-c", NAIVE, server_url, key], timeout=60)
        assert proc.returncode == -signal.SIGKILL
        assert raw.get(key) == b"1" and raw.pttl(key) == -1, "the count lives forever: that IP is blocked for good"
    finally:
        raw.delete(key)


def test_ours_killed_at_any_instant_never_leaves_a_key_without_ttl(
    raw: redis.Redis, server_url: str, unique_namespace: str
) -> None:
    rng = random.Random(5)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", OURS, server_url, unique_namespace], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
            time.sleep(rng.uniform(0.01, 0.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    keys = list(raw.scan_iter(match=f"{unique_namespace}:*", count=1000))
    assert len(keys) == 3 * 50, "one key per limit per identity (daily windows: none ended meanwhile)"
    assert all(raw.pttl(k) != -1 for k in keys), "a key without a TTL"


# -- the server goes away -------------------------------------------------------------------------------------------
def _binaries() -> list[Any]:
    redis_server = shutil.which("redis-server")
    return [
        pytest.param(None, id="valkey"),
        pytest.param(
            redis_server, id="redis", marks=pytest.mark.skipif(redis_server is None, reason="no redis-server on PATH")
        ),
    ]


@pytest.fixture(params=_binaries())
def server_dir(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """A directory for a server this test starts and stops (short: unix socket paths are limited)."""
    directory = f"/tmp/cw-rl-{uuid.uuid4().hex[:8]}"
    yield directory, request.param
    shutil.rmtree(directory, ignore_errors=True)


BREAKER_RESET = 0.5


def _limiters(url: str) -> tuple[Cache, RateLimiter, RateLimiter]:
    # The server these tests stop is gone (its socket removed): every call fails at once, whatever the timeouts.  They
    # are generous for the calls that must succeed: the first on a freshly started server (connect, NOSCRIPT,
    # SCRIPT LOAD, EVALSHA) on a loaded machine.
    cache = Cache(url, namespace="rlfo", timeout=2.0, connect_timeout=2.0, breaker_reset=BREAKER_RESET)
    return (
        cache,
        RateLimiter(cache, limits=[Limit(2, 60), Limit(5, 60, "fixed_window")], name="open"),
        RateLimiter(cache, 2, 60, name="closed", on_error="deny"),
    )


def test_server_down_fails_open_or_closed_as_configured(server_dir: tuple[str, str | None], mode: Mode) -> None:
    directory, binary = server_dir
    server = EmbeddedServer(directory, binary=binary).start()
    cache, fail_open, fail_closed = _limiters(server.url)
    fail_open, fail_closed = mode(fail_open), mode(fail_closed)
    try:
        assert fail_open.hit("u").allowed and fail_closed.hit("u").allowed
        server.stop()
        calls = 0
        for _ in range(10):
            opened, closed = fail_open.hit("u"), fail_closed.hit("u")
            calls += 2
            assert opened.allowed and opened.degraded and opened.policy == fail_open.limits[0]
            assert opened.remaining == 1 and opened.retry_after == 0
            assert not closed.allowed and closed.degraded and closed.retry_after == BREAKER_RESET
        assert fail_open.peek("u").degraded
        calls += 1
        with pytest.raises(InvalidationError, match="retry"):
            fail_open.reset("u")
        calls += 1
        stats = cache.stats()
        assert stats.total.errors == 5 and stats.total.errors + stats.total.skipped == calls, stats.total
        assert stats.breaker == "open"
        # back: a new server (empty, no scripts loaded) on the same socket; the next probe reloads the script
        server = EmbeddedServer(directory, binary=binary).start()
        time.sleep(BREAKER_RESET + 0.05)
        back = fail_closed.hit("u")
        assert back.allowed and not back.degraded and back.remaining == 1
        assert not fail_open.hit("u").degraded
    finally:
        mode(cache).close()
        server.stop()


async def test_server_down_async(server_dir: tuple[str, str | None]) -> None:
    directory, binary = server_dir
    server = EmbeddedServer(directory, binary=binary).start()
    cache, fail_open, fail_closed = _limiters(server.url)
    try:
        assert (await fail_open.ahit("u")).allowed and (await fail_closed.ahit("u")).allowed
        server.stop()
        for _ in range(10):
            opened, closed = await fail_open.ahit("u"), await fail_closed.ahit("u")
            assert opened.allowed and opened.degraded
            assert not closed.allowed and closed.degraded
        assert (await fail_closed.apeek("u")).degraded
        with pytest.raises(InvalidationError):
            await fail_open.areset("u")
        assert cache.stats().total.errors == 5
        server = EmbeddedServer(directory, binary=binary).start()
        await asyncio.sleep(BREAKER_RESET + 0.05)
        back = await fail_closed.ahit("u")
        assert back.allowed and not back.degraded
    finally:
        await cache.aclose()
        server.stop()
