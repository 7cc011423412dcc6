"""The Cache contract, run against every server kind (embedded Valkey and the system Redis), sync and async."""

from __future__ import annotations

import datetime as dt
import decimal
from datetime import timedelta

import pytest
import redis

from cachewise import MISSING, Cache, InvalidKeyError, SerializationError, TTLRequiredError, until_next
from cachewise.errors import InvalidTTLError
from tests.modes import Mode

PRODUCT = {"id": 42, "name": "Notebook", "price": 1999.9, "tags": ["office", "paper"]}


# -- get / set / delete -------------------------------------------------------------------------------------
def test_set_get_delete(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    assert c.get("product:42") is None
    assert c.set("product:42", PRODUCT, ttl=300) is True
    assert c.get("product:42") == PRODUCT
    assert c.delete("product:42") is True
    assert c.get("product:42", default="gone") == "gone"
    assert c.delete("product:42") is False


def test_value_readable_by_any_client_under_namespace(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    c.set("product:42", PRODUCT, ttl=300)
    stored = raw.get(f"{cache.namespace}:product:42")
    assert stored is not None and stored.startswith(b"cw1j")
    assert 0 < raw.pttl(f"{cache.namespace}:product:42") <= 300_000


def test_timedelta_ttl_and_pttl(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    c.set("k", 1, ttl=timedelta(minutes=2))
    assert 110_000 < raw.pttl(f"{cache.namespace}:k") <= 120_000


def test_float_ttl_expires(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    import time

    c = mode(cache)
    c.set("short", "v", ttl=0.75)  # long enough that a stalled machine still reads it before it expires
    assert 0 < raw.pttl(f"{cache.namespace}:short") <= 750  # in ms, not rounded up to a whole second
    assert c.get("short") == "v"
    time.sleep(0.9)  # past 0.75 s, and still short of the 1 s a rounded-up TTL would last
    assert c.get("short", MISSING) is MISSING


def test_ttl_required(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    with pytest.raises(TTLRequiredError, match="no TTL") as info:
        c.set("k", 1)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TTLRequiredError):
        c.get_or_set("k", lambda: 1)
    with pytest.raises(TTLRequiredError):
        cache.cached()(lambda: 1)
    assert c.get("k", MISSING) is MISSING  # nothing was written


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "300", 10**12])
def test_bad_ttl(cache: Cache, bad: object, mode: Mode) -> None:
    c = mode(cache)
    with pytest.raises(InvalidTTLError):
        c.set("k", 1, ttl=bad)  # type: ignore[arg-type]


def test_default_ttl(server_url: str, unique_namespace: str, raw: redis.Redis, mode: Mode) -> None:
    with mode(Cache(server_url, namespace=unique_namespace, default_ttl=60)) as c:
        c.set("k", 1)
        assert c.get_or_set("k2", lambda: 2) == 2
        assert 0 < raw.pttl(f"{unique_namespace}:k") <= 60_000
        assert 0 < raw.pttl(f"{unique_namespace}:k2") <= 60_000


def test_aligned_ttl_ends_at_boundary(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    import time

    c = mode(cache)
    if 60 - time.time() % 60 < 2:  # so close to the boundary that the key could expire before we look at it
        time.sleep(60 - time.time() % 60 + 0.05)
    before = time.time()
    c.set("report", [1, 2], ttl=until_next(minutes=1))
    left = raw.pttl(f"{cache.namespace}:report") / 1000
    after = time.time()
    boundary = (before // 60 + 1) * 60  # the next minute boundary after the write
    # The key expires ``left`` after the PTTL read, which happened between ``before`` and ``after`` (whatever the
    # machine's stalls): that instant must be the boundary, to the millisecond.
    assert left > 0 and before + left - 0.01 <= boundary <= after + left + 0.01, (before, after, left, boundary)


def test_jitter_spreads_ttls(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    for i in range(40):
        c.set(f"j:{i}", i, ttl=100, jitter=0.2)
    ttls = [raw.pttl(f"{cache.namespace}:j:{i}") for i in range(40)]
    assert all(79_000 <= t <= 120_000 for t in ttls)
    assert max(ttls) - min(ttls) > 5_000


def test_none_is_a_value(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    c.set("nothing", None, ttl=60)
    assert c.get("nothing", MISSING) is None
    assert c.get("absent", MISSING) is MISSING
    calls = []

    def loader() -> None:
        calls.append(1)

    assert c.get_or_set("none-loader", loader, ttl=60) is None
    assert c.get_or_set("none-loader", loader, ttl=60) is None
    assert len(calls) == 1


def test_get_or_set_loads_once(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    calls: list[int] = []

    def loader() -> dict[str, object]:
        calls.append(1)
        return PRODUCT

    assert c.get_or_set("product:1", loader, ttl=60) == PRODUCT
    assert c.get_or_set("product:1", loader, ttl=60) == PRODUCT
    assert len(calls) == 1
    stats = cache.stats().total
    assert (stats.hits, stats.misses, stats.loads, stats.sets) == (1, 1, 1, 1)


def test_async_loader_in_sync_path_is_refused(cache: Cache) -> None:
    async def loader() -> int:
        return 1

    with pytest.raises(TypeError, match="aget_or_set"):
        cache.get_or_set("k", loader, ttl=5)


def test_unserialisable_value_raises_and_stores_nothing(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    with pytest.raises(SerializationError, match="object"):
        c.set("k", object(), ttl=5)
    with pytest.raises(SerializationError):
        c.get_or_set("k2", lambda: object(), ttl=5)
    assert c.get("k", MISSING) is MISSING


def test_typed_values_round_trip(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    value = {
        "when": dt.datetime(2026, 11, 27, 10, 30, tzinfo=dt.timezone.utc),
        "day": dt.date(2026, 11, 27),
        "amount": decimal.Decimal("10.25"),
        "blob": b"\x00\xff",
        "ids": {1, 2, 3},
        "none": None,
        "nested": [{"a": 1.5}],
    }
    c.set("typed", value, ttl=60)
    assert c.get("typed") == value


@pytest.mark.parametrize("key", ["", "_cw:v", 42])
def test_bad_keys(cache: Cache, key: object, mode: Mode) -> None:
    c = mode(cache)
    with pytest.raises(InvalidKeyError):
        c.set(key, 1, ttl=5)  # type: ignore[arg-type]


def test_unicode_and_long_keys(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    c.set("produto:ação:☕", "café", ttl=30)
    assert c.get("produto:ação:☕") == "café"
    long_key = "report:" + "x" * 5000
    c.set(long_key, 1, ttl=30)
    assert c.get(long_key) == 1
    assert c.get("report:" + "x" * 4999 + "y", MISSING) is MISSING


# -- invalidation -------------------------------------------------------------------------------------------
def test_bump_version_of_group(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    for i in range(20):
        c.set(f"product:{i}", i, ttl=60)
    c.set("user:1", "u", ttl=60)
    c.bump_version("product")
    assert all(c.get(f"product:{i}", MISSING) is MISSING for i in range(20))
    assert c.get("user:1") == "u"
    c.set("product:1", "new", ttl=60)
    assert c.get("product:1") == "new"


def test_bump_version_of_namespace_only(server_url: str, unique_namespace: str, mode: Mode) -> None:
    with (
        mode(Cache(server_url, namespace=unique_namespace)) as a,
        mode(Cache(server_url, namespace=unique_namespace + "-other")) as b,
    ):
        try:
            a.set("product:1", 1, ttl=60)
            a.set("user:1", 1, ttl=60)
            b.set("product:1", 2, ttl=60)
            a.bump_version()
            assert a.get("product:1", MISSING) is MISSING
            assert a.get("user:1", MISSING) is MISSING
            assert b.get("product:1") == 2
        finally:
            b.delete("product:1")
            from tests.conftest import drop_namespace

            drop_namespace(server_url, unique_namespace + "-other")


def test_bump_version_needs_a_first_segment(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    with pytest.raises(InvalidKeyError, match="tag"):
        c.bump_version("user:7")


def test_tags(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    c.set("product:1", 1, ttl=60, tags=("products", "featured"))
    c.set("product:2", 2, ttl=60, tags=("products",))
    c.set("banner:1", "b", ttl=60, tags=("featured",))
    c.set("other", "o", ttl=60)
    c.invalidate_tags("featured")
    assert c.get("product:1", MISSING) is MISSING
    assert c.get("banner:1", MISSING) is MISSING
    assert c.get("product:2") == 2
    assert c.get("other") == "o"
    c.invalidate_tags("products")
    assert c.get("product:2", MISSING) is MISSING
    c.set("product:2", 3, ttl=60, tags=("products",))
    assert c.get("product:2") == 3


def test_tag_names_with_spaces_and_unicode(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    c.set("a", 1, ttl=60, tags=("sales 2026", "região"))
    assert c.get("a") == 1
    c.invalidate_tags("região")
    assert c.get("a", MISSING) is MISSING


def test_invalidating_unknown_tag_is_harmless(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    c.invalidate_tags("never-used")
    c.bump_version("never")
    assert list(raw.scan_iter(match=f"{cache.namespace}:*")) == []


def test_counters_outlive_their_entries(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    c.set("product:1", 1, ttl=5, tags=("t",))
    c.set("product:2", 2, ttl=50, tags=("t",))
    c.set("product:3", 3, ttl=20, tags=("t",))
    ns = cache.namespace
    for counter in (f"{ns}:_cw:{{{ns}}}v", f"{ns}:_cw:{{{ns}}}v:product", f"{ns}:_cw:{{{ns}}}t:t"):
        assert raw.pttl(counter) > 49_000, counter


def test_foreign_and_corrupt_values_are_misses(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    c = mode(cache)
    ns = cache.namespace
    raw.set(f"{ns}:foreign", b"hello from another program", ex=60)
    raw.set(f"{ns}:truncated", b"cw1jffff 12", ex=60)
    raw.set(f"{ns}:badjson", b"cw1j0000{not json", ex=60)
    raw.set(f"{ns}:msgpack", b"cw1m0000\x81\xa1a\x01", ex=60)
    raw.rpush(f"{ns}:wrongtype", "x")
    raw.expire(f"{ns}:wrongtype", 60)
    for key in ("foreign", "truncated", "badjson", "msgpack", "wrongtype"):
        assert c.get(key, MISSING) is MISSING, key
        assert c.get_or_set(key, lambda: "fresh", ttl=60) == "fresh"
        assert c.get(key) == "fresh"
    assert cache.stats().total.invalid == 4 * 2  # get() and get_or_set() each saw the bad value
    assert cache.stats().total.errors == 0  # MGET reads a key of another type as nil: a plain miss, then replaced


def test_other_serializer_reads_are_misses(server_url: str, unique_namespace: str, mode: Mode) -> None:
    with (
        mode(Cache(server_url, namespace=unique_namespace)) as j,
        mode(Cache(server_url, namespace=unique_namespace, serializer="msgpack")) as m,
    ):
        j.set("k", {"a": 1}, ttl=30)
        assert m.get("k", MISSING) is MISSING
        m.set("k", {"a": 2}, ttl=30)
        assert m.get("k") == {"a": 2}
        assert j.get("k", MISSING) is MISSING


def test_msgpack_serializer(server_url: str, unique_namespace: str, mode: Mode) -> None:
    with mode(Cache(server_url, namespace=unique_namespace, serializer="msgpack")) as c:
        value = {"when": dt.datetime(2026, 1, 1), "b": b"x", "n": None, "l": [1, 2.5, "s"]}
        c.set("k", value, ttl=30)
        assert c.get("k") == value


def test_repr_and_url_hide_passwords() -> None:
    c = Cache("redis://user:s3cret@127.0.0.1:1/0", namespace="x", connect_timeout=0.05, timeout=0.05)
    try:
        assert "s3cret" not in repr(c) and "s3cret" not in c.url
    finally:
        c.close()


# -- async --------------------------------------------------------------------------------------------------
async def test_async_twins(cache: Cache) -> None:
    assert await cache.aget("product:42") is None
    assert await cache.aset("product:42", PRODUCT, ttl=300) is True
    assert await cache.aget("product:42") == PRODUCT
    assert cache.get("product:42") == PRODUCT  # sync and async see the same server
    assert await cache.adelete("product:42") is True
    assert await cache.aget("product:42", MISSING) is MISSING
    with pytest.raises(TTLRequiredError):
        await cache.aset("k", 1)


async def test_aget_or_set_with_sync_and_async_loaders(cache: Cache) -> None:
    calls: list[str] = []

    async def aload() -> str:
        calls.append("a")
        return "async"

    def load() -> str:
        calls.append("s")
        return "sync"

    assert await cache.aget_or_set("a", aload, ttl=30) == "async"
    assert await cache.aget_or_set("a", aload, ttl=30) == "async"
    assert await cache.aget_or_set("s", load, ttl=30) == "sync"
    assert await cache.aget_or_set("s", load, ttl=30) == "sync"
    assert calls == ["a", "s"]


def test_async_works_across_event_loops(cache: Cache) -> None:
    import asyncio

    async def roundtrip(i: int) -> object:
        await cache.aset("loop", i, ttl=30)
        return await cache.aget("loop")

    assert asyncio.run(roundtrip(1)) == 1
    assert asyncio.run(roundtrip(2)) == 2


async def test_async_context_manager(server_url: str, unique_namespace: str) -> None:
    async with Cache(server_url, namespace=unique_namespace) as c:
        await c.aset("k", 1, ttl=10)
        assert await c.aget("k") == 1
    assert c.closed


def test_stats_count_roundtrips(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    c.set("a", 1, ttl=10)
    c.get("a")
    c.get("b")
    total = cache.stats().total
    assert total.roundtrips == 3 and total.roundtrip_seconds > 0
    assert total.hit_ratio == 0.5
    cache.reset_stats()
    assert cache.stats().total.roundtrips == 0


def test_threads_and_processes_share_one_server(server_url: str, unique_namespace: str) -> None:
    """Many threads in several processes read and write through one server; every answer is right."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        from concurrent.futures import ThreadPoolExecutor
        from cachewise import Cache
        with Cache({server_url!r}, namespace={unique_namespace!r}) as cache:
            def work(i):
                key = f"item:{{i % 25}}"
                return cache.get_or_set(key, lambda: {{"i": i % 25}}, ttl=60) == {{"i": i % 25}}
            with ThreadPoolExecutor(8) as pool:
                assert all(pool.map(work, range(400)))
            print(cache.stats().total.errors)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == ["0", "0", "0"]
    with Cache(server_url, namespace=unique_namespace) as cache:
        assert all(cache.get(f"item:{i}") == {"i": i} for i in range(25))


def test_ttl_and_clear_stay_in_the_namespace(server_url: str, unique_namespace: str) -> None:
    from tests.conftest import drop_namespace

    other = unique_namespace + "-other"
    with Cache(server_url, namespace=unique_namespace) as a, Cache(server_url, namespace=other) as b:
        try:
            a.set("k", 1, ttl=30, tags=("t",))
            b.set("k", 2, ttl=30)
            left = a.ttl("k")
            assert left is not None and 29 < left <= 30
            assert a.ttl("absent") is None
            assert a.clear() == 4  # the entry, two version counters, one tag counter
            assert a.get("k", MISSING) is MISSING and b.get("k") == 2
        finally:
            drop_namespace(server_url, other)


async def test_attl(cache: Cache) -> None:
    await cache.aset("k", 1, ttl=10)
    left = await cache.attl("k")
    assert left is not None and 9 < left <= 10


def test_invalidations_report_whether_anything_was_cached(cache: Cache, mode: Mode) -> None:
    c = mode(cache)
    assert c.bump_version("product") == 0
    assert c.invalidate_tags("a", "b") == 0
    c.set("product:1", 1, ttl=30, tags=("a",))
    assert c.bump_version("product") == 1
    assert c.invalidate_tags("a", "b") == 1


def test_round_trips_per_read(cache: Cache, mode: Mode) -> None:
    """A read is one round trip; a tagged entry read without naming its tags needs one more."""
    c = mode(cache)
    c.set("plain", 1, ttl=30)
    c.set("tagged", 2, ttl=30, tags=("a", "b"))

    cache.reset_stats()
    assert c.get("plain") == 1 and cache.stats().total.roundtrips == 1
    cache.reset_stats()
    assert c.get("tagged", tags=("b", "a")) == 2 and cache.stats().total.roundtrips == 1
    cache.reset_stats()
    assert c.get("tagged") == 2 and cache.stats().total.roundtrips == 2
    cache.reset_stats()
    assert c.get("tagged", tags=("a",)) == 2 and cache.stats().total.roundtrips == 2
    c.invalidate_tags("b")
    assert c.get("tagged", MISSING, tags=("a", "b")) is MISSING
    assert c.get("tagged", MISSING) is MISSING


def test_server_counts_one_command_per_hit(embedded_url: str, mode: Mode) -> None:
    """Counted by the server itself (on the suite's own embedded server, where no one else sends commands)."""
    client = redis.Redis.from_url(embedded_url)
    with mode(Cache(embedded_url, namespace="commandstats")) as cache:
        cache.set("k", 1, ttl=30, tags=("t",))
        cache.get("k", tags=("t",))

        def calls() -> dict[str, int]:
            return {k: int(v["calls"]) for k, v in client.info("commandstats").items()}

        before = calls()
        for _ in range(10):
            assert cache.get("k", tags=("t",)) == 1
        after = calls()
        cache.clear()
    client.close()
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    delta.pop("cmdstat_info", None)
    assert delta == {"cmdstat_mget": 10}
