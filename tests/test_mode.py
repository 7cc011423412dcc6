"""The ``mode`` fixture itself (tests/modes.py): which method a proxied call really runs, on which event loop, what
passes through, and that async mode cleans up after itself.  Fakes are enough here: this tests the fixture, not
cachewise (one test at the end uses a real Cache, for the pools)."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from cachewise import Cache
from tests.modes import Mode


class FakeConnection:
    def __init__(self) -> None:
        self.closed_on: list[asyncio.AbstractEventLoop] = []

    async def aclose_loop(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())


class Fake:
    """``get``/``aget`` and friends, counting which one ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.connection = FakeConnection()
        self.namespace = "fake"
        self.aflag = 1  # "a" + "flag" exists but is no coroutine function: flag() is never replaced by it
        self.entered: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.calls.append(("get", (key, default), {}))
        return f"sync:{key}"

    async def aget(self, key: str, default: Any = None) -> Any:
        self.calls.append(("aget", (key, default), {}))
        self.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return f"async:{key}"

    def fail(self, exc: BaseException) -> None:
        raise exc

    async def afail(self, exc: BaseException) -> None:
        await asyncio.sleep(0)
        raise exc

    def stats(self) -> str:  # no async twin
        return "stats"

    def flag(self) -> str:
        return "flag"

    def key(self, name: str) -> str:
        return f"fake:{name}"

    def __enter__(self) -> Fake:
        self.entered.append("enter")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.entered.append("exit")

    async def __aenter__(self) -> Fake:
        self.entered.append("aenter")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.entered.append("aexit")


class Holder:
    """Keeps its cache as ``.cache`` (SessionStore, FeatureStore, RateLimiter)."""

    def __init__(self, cache: Fake) -> None:
        self.cache = cache


def test_the_fixture_runs_once_per_mode(mode: Mode, request: pytest.FixtureRequest) -> None:
    assert mode.name in ("sync", "async")
    assert mode.is_async is (mode.name == "async")
    assert request.node.callspec.id == mode.name


def test_a_call_goes_through_the_method_of_its_mode(mode: Mode) -> None:
    fake = Fake()
    proxy = mode(fake)
    if mode.is_async:
        assert proxy.get("k", default=2) == "async:k"
        assert proxy.get("j") == "async:j"
        assert [c[0] for c in fake.calls] == ["aget", "aget"]
        assert fake.calls[0][1] == ("k", 2)
    else:
        assert proxy.get("k", default=2) == "sync:k"
        assert [c[0] for c in fake.calls] == ["get"]
        assert fake.calls[0][1] == ("k", 2)


def test_async_calls_share_one_loop_for_the_whole_test() -> None:
    mode = Mode("async")
    fake = Fake()
    first, second = mode(fake), mode(Fake())
    first.get("a")
    first.get("b")
    second.get("c")
    assert len(fake.loops) == 2 and fake.loops[0] is fake.loops[1] is mode.loop
    assert not mode.loop.is_running() and not mode.loop.is_closed()  # between calls the loop waits, still open
    loop = mode.loop
    mode.close()
    assert loop.is_closed()


def test_attributes_without_an_async_twin_pass_through(mode: Mode) -> None:
    fake = Fake()
    proxy = mode(fake)
    assert proxy.namespace == "fake" and proxy.connection is fake.connection
    assert proxy.stats() == "stats" and proxy.key("x") == "fake:x"
    assert proxy.flag() == "flag"  # its "a" twin is not a coroutine function
    assert fake.calls == []
    proxy.namespace = "changed"  # attributes are set on the object itself
    assert fake.namespace == "changed"
    assert repr(proxy) == repr(fake)
    assert mode(proxy) is proxy  # a proxy is not wrapped twice


@pytest.mark.parametrize("exc", [KeyError("k"), ValueError("v"), TypeError("t")], ids=["KeyError", "ValueError", "T"])
def test_exceptions_propagate_unchanged(mode: Mode, exc: Exception) -> None:
    proxy = mode(Fake())
    with pytest.raises(type(exc)) as info:
        proxy.fail(exc)
    assert info.value is exc


def test_run_awaits_awaitables_and_returns_values(mode: Mode) -> None:
    async def seven() -> int:
        await asyncio.sleep(0)
        return 7

    assert mode.run(seven()) == 7
    assert mode.run(5) == 5
    assert mode.run(None) is None


def test_with_enters_and_leaves_with_the_methods_of_the_mode(mode: Mode) -> None:
    fake = Fake()
    with mode(fake) as proxy:
        assert proxy.get("k") == f"{mode.name}:k"
    assert fake.entered == (["aenter", "aexit"] if mode.is_async else ["enter", "exit"])


def test_teardown_closes_each_cache_pool_once_on_the_loop_then_the_loop() -> None:
    mode = Mode("async")
    cache, other = Fake(), Fake()
    mode(cache).get("a")
    mode(Holder(cache))  # the same cache, found through .cache: closed once
    mode(Holder(other))  # another cache, found through .cache
    mode(object())  # no cache at all: ignored
    loop = mode.loop
    mode.close()
    assert cache.connection.closed_on == [loop] and other.connection.closed_on == [loop]
    assert loop.is_closed()
    mode.close()  # idempotent
    assert cache.connection.closed_on == [loop]


def test_sync_mode_opens_no_loop() -> None:
    mode = Mode("sync")
    fake = Fake()
    assert mode(fake).get("a") == "sync:a"
    mode.close()
    assert fake.connection.closed_on == [] and fake.loops == []


def test_teardown_waits_for_background_tasks(caplog: pytest.LogCaptureFixture) -> None:
    mode = Mode("async")
    done: list[str] = []

    async def refresh() -> None:
        await asyncio.sleep(0.05)
        done.append("refreshed")

    async def spawn() -> None:  # as aget_or_set does for a stale or early refresh: returns at once
        asyncio.get_running_loop().create_task(refresh())

    mode.run(spawn())
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        mode.close()
        gc.collect()
    assert done == ["refreshed"]
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]


@pytest.fixture
def torn_down_before_mode(mode: Mode) -> Iterator[Fake]:
    """Set up after ``mode``, so torn down before it: like a ``Cache`` fixture listed after ``mode``, whose sync
    ``close()`` would forget the asyncio pools.  By then async mode must have closed them."""
    fake = Fake()
    yield fake
    assert len(fake.connection.closed_on) == (1 if mode.is_async else 0)


def test_pools_are_closed_before_other_fixtures_teardown(mode: Mode, torn_down_before_mode: Fake) -> None:
    assert mode(torn_down_before_mode).get("k") == f"{mode.name}:k"


def test_a_real_cache_leaves_no_unclosed_connection(server_url: str, unique_namespace: str) -> None:
    with warnings.catch_warnings():  # first collect what earlier tests left behind: only ours is counted below
        warnings.simplefilter("ignore")
        gc.collect()
    with Cache(server_url, namespace=unique_namespace) as cache:
        mode = Mode("async")
        c = mode(cache)
        assert c.set("k", {"a": 1}, ttl=30) is True
        assert c.get("k") == {"a": 1}
        assert c.get_or_set("l", lambda: 2, ttl=30) == 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mode.close()
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert cache.get("k") == {"a": 1}  # the cache itself stays open
