"""The local tier against real servers: hits answered from memory, and every change — by this process, another
cache, or a plain redis-py client — seen by the next read once its invalidation is delivered; RESP2 and RESP3, sync
and asyncio, on the embedded Valkey, the system Redis, a Cluster and a Sentinel set."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cachewise import Cache, LocalCache
from cachewise.errors import ConfigurationError
from cachewise.server.embedded import EmbeddedServer
from tests.conftest import client_for
from tests.modes import Mode
from tests.processes import in_forked_child
from tests.test_resilience import OwnServer


def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.002)
    return check()


@pytest.fixture(params=(2, 3), ids=("resp2", "resp3"))
def local_cache(request: pytest.FixtureRequest, server_url: str, unique_namespace: str) -> Iterator[Cache]:
    cache = Cache(server_url, namespace=unique_namespace, default_ttl=60, local=LocalCache(protocol=request.param))
    assert until(lambda: cache.stats().local.coherent)  # type: ignore[union-attr]
    yield cache
    cache.close()


@pytest.fixture
def other(server_url: str, unique_namespace: str) -> Iterator[Cache]:
    """Another cache on the same namespace (another process, as far as the first one can tell)."""
    with Cache(server_url, namespace=unique_namespace, default_ttl=60) as cache:
        yield cache


def local_hits(cache: Cache) -> int:
    return cache.stats().total.local_hits


def seen(c: Any, key: str, value: Any) -> Callable[[], bool]:
    return lambda: c.get(key) == value


def test_hits_come_from_memory_and_count_as_hits(local_cache: Cache, mode: Mode) -> None:
    c = mode(local_cache)
    c.set("a", {"v": 1})
    assert c.get("a") == {"v": 1}  # from the server, now kept
    assert until(lambda: c.get("a") == {"v": 1} and local_hits(local_cache) >= 2)
    stats = local_cache.stats()
    assert stats.total.hits >= 3 and stats.total.local_misses >= 1
    assert stats.local is not None and stats.local.entries == 1


def test_writes_of_this_process_are_seen_before_they_return(local_cache: Cache, mode: Mode) -> None:
    c = mode(local_cache)
    c.set("a", 1, tags=["t"])
    assert until(lambda: c.get("a", tags=["t"]) == 1 and local_hits(local_cache) > 0)
    c.set("a", 2, tags=["t"])
    assert c.get("a", tags=["t"]) == 2  # no waiting: the writer's own tier was updated before set() returned
    c.invalidate_tags("t")
    assert c.get("a", tags=["t"]) is None
    c.set("b", 1)
    assert until(lambda: c.get("b") == 1 and local_cache.stats().local.entries > 0)  # type: ignore[union-attr]
    c.bump_version()
    assert c.get("b") is None
    c.set("b", 2)
    c.get("b")
    c.delete("b")
    assert c.get("b") is None


def test_changes_by_anyone_else_are_seen_once_delivered(
    local_cache: Cache, other: Cache, server_url: str, mode: Mode
) -> None:
    c = mode(local_cache)
    raw = client_for(server_url)
    try:
        for key in ("a", "b", "c"):
            other.set(key, 1, tags=["t"], ttl=60)
            assert until(lambda key=key: c.get(key, tags=["t"]) == 1 and local_hits(local_cache) > 0)
        other.set("a", 2, tags=["t"])  # another cache
        assert until(lambda: c.get("a", tags=["t"]) == 2)
        other.invalidate_tags("t")  # a tag counter it was stamped with
        assert until(lambda: c.get("b", tags=["t"]) is None)
        other.set("c", 3)
        assert until(lambda: c.get("c") == 3 and local_hits(local_cache) > 0)
        other.bump_version()  # the namespace counter
        assert until(lambda: c.get("c") is None)
        other.set("d", 4)
        assert until(lambda: c.get("d") == 4 and local_cache.stats().local.entries > 0)  # type: ignore[union-attr]
        raw.delete(local_cache.keyspace.entry("d"))  # a plain client, no cachewise involved
        assert until(lambda: c.get("d") is None)
    finally:
        raw.close()


def test_decorated_functions_use_it_unless_they_opt_out(local_cache: Cache, other: Cache) -> None:
    calls = {"on": 0, "off": 0}

    @local_cache.cached(ttl=60, key="on:{x}")
    def on(x: int) -> int:
        calls["on"] += 1
        return x

    @local_cache.cached(ttl=60, key="off:{x}", local=False)
    def off(x: int) -> int:
        calls["off"] += 1
        return x

    for _ in range(5):
        assert on(1) == 1 and off(1) == 1
    assert calls == {"on": 1, "off": 1}
    stats = local_cache.stats().functions
    by_name = {name.rsplit(".", 1)[-1]: counters for name, counters in stats.items()}
    assert by_name["off"].local_hits == 0 and by_name["off"].hits == 4
    assert by_name["on"].local_hits >= 3 and by_name["on"].hits == 4
    other.delete("on:1")
    assert until(lambda: on(1) == 1 and calls["on"] == 2)


@pytest.mark.parametrize("beta", [0.0001, 5000.0])
def test_xfetch_still_decides_local_hits_near_expiry(local_cache: Cache, beta: float) -> None:
    """A local hit is judged by XFetch from the entry's header as a server hit is: with a large ``early_refresh``
    (the entry is always within XFETCH_HORIZON × beta × load of its expiry) hits refresh early; with a tiny one
    (always far from it) they are served from memory without a draw, and never refresh."""
    loads = [0]

    @local_cache.cached(ttl=30, key="xf:{x}", early_refresh=beta)
    def slow(x: int) -> int:
        loads[0] += 1
        time.sleep(0.02)  # a load time the header records (ms)
        return x

    assert slow(1) == 1
    for _ in range(300):
        assert slow(1) == 1
    total = local_cache.stats().total
    if beta > 1:
        assert total.early_refreshes >= 1 and loads[0] >= 2  # p ≈ e^(-30 s / (5000 × 20 ms)) ≈ 0.7 per hit
    else:
        assert (total.early_refreshes, loads[0]) == (0, 1) and total.local_hits >= 250


def test_the_read_that_raced_an_invalidation_does_not_keep_the_old_value(
    local_cache: Cache, server_url: str, mode: Mode
) -> None:
    """Forced race: the fill's read is answered (old value) → a plain client writes → its invalidation is handled
    → only then does the reply reach the tier.  The old value must not be kept."""
    c = mode(local_cache)
    c.set("a", "old")
    raw = client_for(server_url)
    tracker = local_cache.engine.local.tracker  # type: ignore[union-attr]
    real = local_cache.engine.executor
    entry = local_cache.keyspace.entry("a")

    def race(reply: Any) -> Any:
        before = tracker.messages
        raw.set(entry, b"not even a cachewise entry", px=60_000)
        assert until(lambda: tracker.messages > before)  # the invalidation was handled, the reply not yet
        return reply

    class Racing:
        """The engine's executor, with the reply held back until the write's invalidation was handled."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def attempt(self, command: Any, scope: Any = None) -> Any:
            return race(real.attempt(command, scope))

        async def aattempt(self, command: Any, scope: Any = None) -> Any:
            return race(await real.aattempt(command, scope))

    local_cache.engine.executor = Racing()  # type: ignore[assignment]
    try:
        assert c.get("a") == "old"  # what the read saw
    finally:
        local_cache.engine.executor = real
        raw.close()
    assert local_cache.stats().local.entries == 0  # type: ignore[union-attr]
    assert c.get("a") is None  # the server's foreign bytes: a miss, never the old value from memory


@pytest.mark.one_server("kills the tracking connection of one server")
def test_a_killed_invalidation_link_flushes_the_tier_and_it_resumes(local_cache: Cache, server_url: str) -> None:
    local_cache.set("a", 1)
    assert until(lambda: local_cache.get("a") == 1 and local_cache.stats().local.entries == 1)  # type: ignore[union-attr]
    before = local_cache.stats().local
    assert before is not None
    raw = client_for(server_url)
    try:
        killed = 0
        for client in raw.client_list():
            if "T" in client.get("flags", "") or "t" in client.get("flags", ""):
                raw.client_kill_filter(_id=client["id"])
                killed += 1
        assert killed >= 1
        # The link is dead: no invalidation will come.  The tracker's thread notices the closed link (or the PINGs
        # stop being answered) and the tier stops serving: a write by a plain client is seen within max_lag (the
        # documented bound: the thread may not have run yet when the next read comes), and from then on at once.
        raw.set(local_cache.keyspace.entry("a"), b"junk", px=60_000)
        assert until(lambda: local_cache.get("a") is None, timeout=4 * 0.5)  # LocalCache() default max_lag 0.5 s
        assert local_cache.get("a") is None
    finally:
        raw.close()
    assert until(lambda: local_cache.stats().local.resumes > before.resumes)  # type: ignore[union-attr]
    after = local_cache.stats().local
    assert after is not None and after.flushes > before.flushes and after.coherent
    local_cache.set("a", 2)
    assert until(lambda: local_cache.get("a") == 2 and local_hits(local_cache) > 1)


def test_a_forked_child_starts_empty(local_cache: Cache) -> None:
    local_cache.set("a", 1)
    assert until(lambda: local_cache.get("a") == 1 and local_cache.stats().local.entries == 1)  # type: ignore[union-attr]

    def child() -> bool:
        local = local_cache.stats().local
        return local is not None and local.entries == 0 and local_cache.get("a") == 1

    assert in_forked_child(child)


@pytest.mark.parametrize("protocol", (2, 3))
def test_a_flushdb_by_anyone_empties_it(protocol: int) -> None:
    """On a server of its own (a FLUSHDB would wipe a shared one)."""
    with EmbeddedServer() as server, Cache(server.url, default_ttl=60, local=LocalCache(protocol=protocol)) as cache:
        assert until(lambda: cache.stats().local.coherent)  # type: ignore[union-attr]
        cache.set("a", 1)
        assert until(lambda: cache.get("a") == 1 and cache.stats().local.entries == 1)  # type: ignore[union-attr]
        raw = client_for(server.url)
        try:
            raw.flushdb()
        finally:
            raw.close()
        assert until(lambda: cache.stats().local.entries == 0)  # type: ignore[union-attr]
        assert cache.get("a") is None


def test_local_options_are_checked() -> None:
    for bad in ({"maxsize": 0}, {"max_bytes": -1}, {"ttl": 0}, {"max_lag": float("nan")}, {"protocol": 4}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            LocalCache(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="local="):
        Cache("redis://127.0.0.1:1", local="yes")  # type: ignore[arg-type]


def test_a_plain_client_sees_no_difference(local_cache: Cache, server_url: str) -> None:
    """What the tier keeps changes nothing on the server: the entries are the same bytes."""
    local_cache.set("a", {"v": 1})
    local_cache.get("a")
    raw: redis.Redis = client_for(server_url)
    try:
        assert raw.get(local_cache.keyspace.entry("a")) is not None
    finally:
        raw.close()


def test_a_restarted_server_under_readers_never_makes_them_late() -> None:
    """Readers in threads, a writer in another cache, the server killed and restarted empty mid-run: no read
    returns a value whose successor was written more than ``max_lag`` (plus a read's own time) before the read
    began; the tier flushes, resumes and serves from memory again afterwards."""
    server = OwnServer()
    max_lag = 0.2
    cache = Cache(server.url, default_ttl=60, local=LocalCache(max_lag=max_lag), timeout=0.2, breaker_reset=0.2)
    writer = Cache(server.url, default_ttl=60, timeout=0.2, breaker_reset=0.2)
    written: dict[int, float] = {}  # version -> when its write returned
    reads: list[tuple[float, Any]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def read() -> None:
        while not stop.is_set():
            began = time.monotonic()
            value = cache.get("a")
            with lock:
                reads.append((began, value))

    def write_for(seconds: float, start: int) -> int:
        version = start
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            version += 1
            if writer.set("a", version):
                written[version] = time.monotonic()
            time.sleep(0.005)
        return version

    try:
        assert until(lambda: cache.stats().local.coherent)  # type: ignore[union-attr]
        threads = [threading.Thread(target=read) for _ in range(3)]
        for thread in threads:
            thread.start()
        version = write_for(0.5, 0)
        before = cache.stats().local
        assert before is not None
        server.kill()
        time.sleep(0.3)
        server.restart()
        version = write_for(1.5, version)
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        after = cache.stats().local
        assert after is not None
        assert after.flushes > before.flushes and after.resumes > before.resumes and after.coherent
        late = [
            (began, value)
            for began, value in reads
            if isinstance(value, int) and value + 1 in written and began > written[value + 1] + max_lag + 0.25
        ]
        assert not late, late[:5]
        hits_before = cache.stats().total.local_hits
        assert until(lambda: cache.get("a") == version and cache.stats().total.local_hits > hits_before + 1)
    finally:
        stop.set()
        cache.close()
        writer.close()
        server.close()
