"""Stampede protection under real concurrency: threads, asyncio tasks and processes against one real server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachewise import MISSING, Cache, Protection
from tests.processes import run_together

#: How the first read of a cache-aside call is made: a plain MGET (misses are rare), or the read that takes the lease
#: in the same round trip (engine/firstread.py), which a cache sends once it has seen a run of misses in the group.
FIRST_READS = ("plain", "leased")


def expect_misses(cache: Cache, group: str) -> None:
    """Miss a few keys of ``group`` (none of them the test's), so that ``cache`` takes the lease with its reads."""
    for i in range(4):
        cache.get_or_set(f"{group}:warm-{i}", lambda: 0, ttl=60)
    assert cache.engine.context.odds.likely(cache.engine.context.read_plan(f"{group}:1").group)


async def aexpect_misses(cache: Cache, group: str) -> None:
    """Async :func:`expect_misses`."""
    for i in range(4):
        await cache.aget_or_set(f"{group}:warm-{i}", lambda: 0, ttl=60)
    assert cache.engine.context.odds.likely(cache.engine.context.read_plan(f"{group}:1").group)


# -- one load for many callers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("first_read", FIRST_READS)
def test_4_processes_x_50_threads_load_a_cold_key_once(
    server_url: str, unique_namespace: str, tmp_path: Path, first_read: str
) -> None:
    loads, go = tmp_path / "loads", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import json, os, sys, time, threading
        from concurrent.futures import ThreadPoolExecutor
        from cachewise import Cache
        cache = Cache({server_url!r}, namespace={unique_namespace!r})

        @cache.cached(ttl=60, key="product:{{pid}}")
        def product(pid):
            with open({str(loads)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(0.2)  # a simulated 200 ms origin
            return {{"id": pid, "by": os.getpid()}}

        if {first_read == "leased"!r}:  # a run of misses in the group: the reads take the lease with them
            for i in range(4):
                cache.get_or_set(f"product:warm-{{os.getpid()}}-{{i}}", lambda: 0, ttl=60)
        context = cache.engine.context
        leased = context.odds.likely(context.read_plan("product:42").group)
        before = cache.stats().total.leases
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: product(42), range(50)))
        stats = cache.stats().total
        print(json.dumps({{"results": results, "waits": stats.waits, "leases": stats.leases - before,
                           "leased": leased}}), flush=True)
        cache.close()
        """
    )
    outputs = run_together(code, 4, go)
    assert all(out["leased"] == (first_read == "leased") for out in outputs)
    assert len(loads.read_text().split()) == 1, "the loader ran more than once"
    values = [r for out in outputs for r in out["results"]]
    assert len(values) == 200 and all(v == values[0] for v in values) and values[0]["id"] == 42
    assert sum(out["leases"] for out in outputs) == 1


@pytest.mark.parametrize("first_read", FIRST_READS)
async def test_200_asyncio_tasks_load_a_cold_key_once(server_url: str, unique_namespace: str, first_read: str) -> None:
    calls: list[int] = []
    # Few connections: waiters must not hold one while they wait.
    async with Cache(server_url, namespace=unique_namespace, max_connections=4) as cache:
        if first_read == "leased":
            await aexpect_misses(cache, "report")
        before = cache.stats().total.leases

        @cache.cached(ttl=60, key="report:{day}")
        async def report(day: str) -> dict[str, Any]:
            calls.append(1)
            await asyncio.sleep(0.2)  # a simulated 200 ms origin
            return {"day": day, "total": 1234}

        results = await asyncio.gather(*(report("2026-11-27") for _ in range(200)))
        assert calls == [1]
        assert results == [{"day": "2026-11-27", "total": 1234}] * 200
        stats = cache.stats().total
        assert (stats.leases - before, stats.errors) == (1, 0)
        assert stats.waits >= 1


@pytest.mark.parametrize("first_read", FIRST_READS)
def test_threads_sync_get_or_set_load_once(cache: Cache, first_read: str) -> None:
    """With leased reads, one of the threads is granted the lease by its read and the others are told to wait (or
    follow a caller of this process), whichever of them joins the local flight first."""
    if first_read == "leased":
        expect_misses(cache, "cold")
    before = cache.stats().total.leases
    calls: list[int] = []
    barrier = threading.Barrier(30)

    def load() -> int:
        calls.append(1)
        time.sleep(0.1)
        return 7

    def caller() -> int:
        barrier.wait()
        return cache.get_or_set("cold", load, ttl=30)

    results = run_threads(caller, 30)
    assert results == [7] * 30 and calls == [1]
    assert cache.stats().total.leases - before == 1


def test_once_misses_are_likely_a_miss_takes_two_round_trips(cache: Cache) -> None:
    expect_misses(cache, "item")
    before = cache.stats().total
    assert cache.get_or_set("item:1", lambda: 1, ttl=60) == 1
    after = cache.stats().total
    assert (after.roundtrips - before.roundtrips, after.leases - before.leases) == (2, 1)  # read + lease, write
    for _ in range(60):  # hits: misses are rare again, and reads go back to the plain MGET
        assert cache.get_or_set("item:1", lambda: 2, ttl=60) == 1
    context = cache.engine.context
    assert not context.odds.likely(context.read_plan("item:1").group)
    assert cache.get("item:1") == 1


def test_without_single_flight_every_miss_loads(cache: Cache) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(10)
    loading = threading.Barrier(10, timeout=10)  # no load ends before all 10 run: raises if they are serialised

    def load() -> int:
        calls.append(1)
        loading.wait()
        return 7

    def caller() -> int:
        barrier.wait()
        return cache.get_or_set("cold", load, ttl=30, single_flight=False)

    assert run_threads(caller, 10) == [7] * 10
    assert len(calls) == 10


# -- a holder that dies --------------------------------------------------------------------------------------------
def test_holder_killed_mid_load_is_replaced(server_url: str, unique_namespace: str, tmp_path: Path) -> None:
    loading = tmp_path / "loading"
    holder_code = textwrap.dedent(
        f"""
        import time
        from cachewise import Cache, Protection
        cache = Cache({server_url!r}, namespace={unique_namespace!r}, protection=Protection(lease_ttl=1.0))

        def load():
            open({str(loading)!r}, "w").close()
            time.sleep(30)  # hangs until killed
            return "from the dead holder"

        cache.get_or_set("slow", load, ttl=60)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code])
    deadline = time.monotonic() + 30
    while not loading.exists():
        assert time.monotonic() < deadline and holder.poll() is None, "the holder never started loading"
        time.sleep(0.01)
    lease_ttl = 1.0
    with Cache(server_url, namespace=unique_namespace) as cache:
        calls: list[int] = []

        def load() -> str:
            calls.append(1)
            time.sleep(0.2)
            return "fresh"

        def caller() -> tuple[str, float]:
            started = time.monotonic()
            value = cache.get_or_set("slow", load, ttl=60)
            return value, time.monotonic() - started

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        results = run_threads(caller, 20)
        assert [value for value, _ in results] == ["fresh"] * 20
        assert calls == [1]  # one waiter took the expired lease and loaded; the others were woken by it
        # The documented bound: the dead holder's lease TTL, plus one load, plus scheduling slack.
        bound = lease_ttl + 0.2 + 1.0
        assert sum(1 for _, waited in results if waited > bound) == 0, sorted(w for _, w in results)[-3:]
        stats = cache.stats().total
        assert stats.errors == 0 and stats.leases == 1


# -- the stale-set race, replayed deterministically -------------------------------------------------------------
class Race:
    """A reader whose loader reads the 'database', then blocks until the test lets it return."""

    def __init__(self, cache: Cache, db: dict[str, int], **options: Any) -> None:
        self.cache, self.db = cache, db
        self.read_done, self.release = threading.Event(), threading.Event()
        self.result: list[int] = []
        self.options = options
        self.thread = threading.Thread(target=self._run)

    def _load(self) -> int:
        value = self.db["row"]  # reads the old row ...
        self.read_done.set()
        assert self.release.wait(10)  # ... and is slow to return it
        return value

    def _run(self) -> None:
        self.result.append(self.cache.get_or_set("product:1", self._load, ttl=60, **self.options))

    def __enter__(self) -> Race:
        self.thread.start()
        assert self.read_done.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


@pytest.mark.parametrize(
    "invalidate",
    [
        lambda c: c.delete("product:1"),
        lambda c: c.bump_version("product"),
        lambda c: c.bump_version(),
        lambda c: c.set("product:1", 2, ttl=60),
    ],
    ids=["delete", "bump_group", "bump_namespace", "write_through"],
)
@pytest.mark.parametrize("first_read", FIRST_READS)
def test_stale_set_race_never_stores_the_old_row(
    cache: Cache, invalidate: Callable[[Cache], object], first_read: str
) -> None:
    if first_read == "leased":
        expect_misses(cache, "product")
    db = {"row": 1}
    with Race(cache, db) as reader:
        db["row"] = 2  # the writer commits ...
        invalidate(cache)  # ... and invalidates, while the reader still holds the old row
    assert reader.result == [1]  # the reader started before the write: it may return the old row
    assert cache.get("product:1", MISSING) in (MISSING, 2)  # but never stores it
    assert cache.get_or_set("product:1", lambda: db["row"], ttl=60) == 2
    assert cache.stats().total.refused_writes == 1


@pytest.mark.parametrize("first_read", FIRST_READS)
def test_stale_set_race_with_tags(cache: Cache, first_read: str) -> None:
    if first_read == "leased":
        expect_misses(cache, "product")
    db = {"row": 1}
    with Race(cache, db, tags=("products",)):
        db["row"] = 2
        cache.invalidate_tags("products")
    assert cache.get("product:1", MISSING, tags=("products",)) is MISSING
    assert cache.get_or_set("product:1", lambda: db["row"], ttl=60, tags=("products",)) == 2


def test_naive_cache_aside_stores_the_old_row(cache: Cache) -> None:
    """The same replay without leases: the race the leases close is real."""
    db = {"row": 1}
    with Race(cache, db, single_flight=False):
        db["row"] = 2
        cache.delete("product:1")
    assert cache.get("product:1") == 1  # stale, and it would stay so until its TTL


# -- loader failures -------------------------------------------------------------------------------------------
def test_failed_load_releases_the_lease_at_once_and_is_not_cached(cache: Cache) -> None:
    started_loading = threading.Event()
    fail = threading.Event()
    calls: list[str] = []

    def failing() -> int:
        calls.append("failing")
        started_loading.set()
        assert fail.wait(10)
        raise RuntimeError("database down")

    def working() -> int:
        calls.append("working")
        return 5

    protection = Protection(lease_ttl=30)  # far longer than the test: only a release can let the waiter in
    holder_error: list[BaseException] = []

    def holder() -> None:
        try:
            cache.get_or_set("k", failing, ttl=60, single_flight=True)
        except RuntimeError as exc:
            holder_error.append(exc)

    cache.protection = protection
    first = threading.Thread(target=holder)
    first.start()
    assert started_loading.wait(10)
    waiter_result: list[int] = []
    second = threading.Thread(target=lambda: waiter_result.append(cache.get_or_set("k", working, ttl=60)))
    second.start()
    time.sleep(0.2)  # the waiter is now waiting on the lease
    fail.set()
    first.join(10)
    second.join(10)
    assert not second.is_alive(), "the waiter was not woken when the lease was released"
    assert [str(e) for e in holder_error] == ["database down"]
    assert waiter_result == [5] and calls == ["failing", "working"]
    assert cache.get("k") == 5


async def test_async_failed_load_propagates_and_is_not_cached(cache: Cache) -> None:
    attempts: list[int] = []

    async def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("timeout from the origin")
        return 9

    with pytest.raises(ValueError):
        await cache.aget_or_set("k", flaky, ttl=30)
    assert await cache.aget_or_set("k", flaky, ttl=30) == 9
    assert len(attempts) == 2


# -- early refresh (XFetch) -------------------------------------------------------------------------------------
def hot_key_run(cache: Cache, *, early_refresh: float, ttl: float, expiries: int) -> tuple[int, int, int]:
    """Read one hot key continuously across ``expiries`` TTLs; (misses after the first load, refreshes, loads)."""

    @cache.cached(ttl=ttl, key=f"hot:{early_refresh}", early_refresh=early_refresh)
    def hot() -> float:
        time.sleep(0.05)  # a 50 ms origin
        return time.time()

    hot()
    cache.reset_stats()
    end = time.monotonic() + ttl * expiries
    while time.monotonic() < end:
        hot()
    stats = cache.stats().total
    return stats.misses, stats.early_refreshes, stats.loads


def test_xfetch_refreshes_hot_keys_before_they_expire(cache: Cache) -> None:
    # A read refreshes when Δ·β·(−ln u) reaches the time left (Δ the 50 ms load, β = 2): with one read every
    # 0.1-1 ms the refresh comes some 0.45-0.8 s before expiry, so that a reader stalled for a few hundred ms (GC, a
    # busy CI machine) still refreshes in time, yet well after the write: 1-3 refreshes per 1.5 s TTL.
    ttl, expiries = 1.5, 4
    misses, refreshes, loads = hot_key_run(cache, early_refresh=2.0, ttl=ttl, expiries=expiries)
    assert misses == 0, "callers saw the key expire"
    # At least one refresh per TTL, by one caller, but not on every read (that would be ~30 per TTL).
    assert expiries - 1 <= refreshes <= 4 * expiries and loads == refreshes, refreshes
    misses_off, refreshes_off, _ = hot_key_run(cache, early_refresh=0, ttl=ttl, expiries=expiries)
    assert refreshes_off == 0
    assert misses_off >= expiries - 1  # without XFetch, every expiry is a miss


# -- stale while revalidate ----------------------------------------------------------------------------------------
async def test_stale_while_revalidate_refreshes_in_the_background(cache: Cache) -> None:
    calls: list[int] = []
    served = asyncio.Event()

    async def load() -> int:
        calls.append(1)
        if len(calls) == 2:  # the refresh returns only once the 20 callers have all been answered
            try:
                await asyncio.wait_for(served.wait(), 10)
            except asyncio.TimeoutError:
                raise AssertionError("the callers waited for the refresh instead of taking the stale value") from None
        return len(calls)

    cache.protection = Protection(lease_ttl=10)  # a slow machine must not let a second refresh take over
    assert await cache.aget_or_set("dash", load, ttl=0.2, stale_ttl=30, early_refresh=0) == 1
    await asyncio.sleep(0.3)  # past its TTL, within its grace
    assert cache.get("dash", MISSING) is MISSING  # a plain read does not serve stale values
    # The refreshed value gets a long TTL, so that it cannot go stale (and be refreshed again) while we look for it.
    results = await asyncio.gather(
        *(cache.aget_or_set("dash", load, ttl=60, stale_ttl=30, early_refresh=0) for _ in range(20))
    )
    served.set()
    assert results == [1] * 20  # all served the stale value at once
    deadline = time.monotonic() + 10
    while await cache.aget_or_set("dash", load, ttl=60, stale_ttl=30, early_refresh=0) != 2:  # the refresh lands
        assert time.monotonic() < deadline, "the background refresh never landed"
        await asyncio.sleep(0.01)
    assert calls == [1, 1]
    assert cache.stats().total.stale_served >= 19


def test_stale_while_revalidate_sync_refreshes_in_one_caller(cache: Cache) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(10)
    served = threading.Semaphore(0)

    def load() -> int:
        calls.append(1)
        if len(calls) == 2:  # the reload returns only once the 9 other callers have been answered
            for _ in range(9):
                assert served.acquire(timeout=10), "the callers waited for the reload instead of taking the stale value"
        return len(calls)

    # A caller that waited for the reload instead would wait longer than the reload waits for it (10 s), rather
    # than give up after its default budget (1.5 s here) and read the stale value late: such a caller is caught.
    cache.protection = Protection(max_wait=30)
    assert cache.get_or_set("dash", load, ttl=0.2, stale_ttl=30, early_refresh=0) == 1
    time.sleep(0.3)

    def caller() -> int:
        barrier.wait()
        value = cache.get_or_set("dash", load, ttl=0.2, stale_ttl=30, early_refresh=0)
        served.release()
        return value

    results = run_threads(caller, 10)
    assert sorted(results) == [1] * 9 + [2]  # the lease holder reloads; the others are served the stale value
    assert calls == [1, 1]


# -- versioned writes -----------------------------------------------------------------------------------------
def test_versioned_writes_keep_the_newest(cache: Cache) -> None:
    assert cache.set("row:1", {"v": 2}, ttl=60, version=2)
    assert not cache.set("row:1", {"v": 1}, ttl=60, version=1)  # an older write arriving late
    assert not cache.set("row:1", {"v": 2}, ttl=60, version=2)
    assert cache.get("row:1") == {"v": 2}
    assert cache.set("row:1", {"v": 3}, ttl=60, version=3)

    def writer(version: int) -> bool:
        return cache.set("row:2", {"v": version}, ttl=60, version=version)

    versions = list(range(1, 41))
    import random

    random.shuffle(versions)
    run_threads_args(writer, versions)
    assert cache.get("row:2") == {"v": 40}


# -- helpers -----------------------------------------------------------------------------------------------------
def run_threads(fn: Callable[[], Any], n: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn) for _ in range(n)]
        return [f.result(timeout=60) for f in futures]


def run_threads_args(fn: Callable[[Any], Any], args: list[Any]) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(fn, args))
