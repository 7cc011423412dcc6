"""The cache never breaks the application: a server that is gone is a miss, not an exception."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachewise import Cache, InvalidationError
from cachewise.server.embedded import EmbeddedServer


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    # A short directory: unix socket paths are limited to ~100 bytes.
    server = EmbeddedServer().start()
    yield server
    server.stop()


def test_reads_and_writes_fail_open_when_the_server_is_gone(
    own_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(own_server.url, namespace="fo", timeout=2.0, connect_timeout=2.0)
    calls: list[int] = []

    @cache.cached(ttl=60)
    def load(x: int) -> int:
        calls.append(x)
        return x * 2

    assert load(1) == 2 and load(1) == 2 and calls == [1]
    own_server.stop()
    with caplog.at_level(logging.WARNING, logger="cachewise"):
        for _ in range(50):
            assert load(1) == 2
        assert cache.get("anything", default="d") == "d"
        assert cache.set("k", 1, ttl=5) is False
        assert cache.get_or_set("k", lambda: "loaded", ttl=5) == "loaded"
    assert len(calls) == 51
    stats = cache.stats().total
    # One server call per cache call (a failed read is not followed by a write): the first five fail and open the
    # circuit breaker; every later call skips the server at once.
    assert stats.errors == 5 and stats.errors + stats.skipped == 50 + 1 + 1 + 1
    snapshot = cache.stats()
    assert (snapshot.breaker, snapshot.breaker_opens) == ("open", 1)
    # Logged, but not once per call.
    assert 1 <= len([r for r in caplog.records if "carrying on" in r.message]) <= 3
    with pytest.raises(InvalidationError, match="retry"):
        cache.delete("k")
    with pytest.raises(InvalidationError):
        cache.bump_version()
    with pytest.raises(InvalidationError):
        cache.invalidate_tags("t")
    cache.close()


async def test_async_fails_open_too(own_server: EmbeddedServer) -> None:
    cache = Cache(own_server.url, namespace="fo", timeout=2.0, connect_timeout=2.0)
    assert await cache.aset("k", 1, ttl=5)
    own_server.stop()
    assert await cache.aget("k", "d") == "d"
    assert await cache.aset("k", 1, ttl=5) is False

    async def loader() -> str:
        await asyncio.sleep(0)
        return "v"

    assert await cache.aget_or_set("k", loader, ttl=5) == "v"
    with pytest.raises(InvalidationError):
        await cache.adelete("k")
    await cache.aclose()


def test_recovers_after_restart_and_reloads_scripts(tmp_path: Path) -> None:
    directory = "/tmp/cw-restart-" + tmp_path.name[-8:]
    server = EmbeddedServer(directory).start()
    try:
        cache = Cache(f"unix://{server.socket_path}", namespace="re", timeout=2.0, connect_timeout=2.0)
        cache.set("k", 1, ttl=30)
        assert cache.get("k") == 1
        server.stop()
        assert cache.get("k", "down") == "down"
        server = EmbeddedServer(directory).start()  # empty, and without our Lua scripts loaded
        assert cache.get("k", "miss") == "miss"
        assert cache.set("k", 2, ttl=30) is True
        assert cache.get("k") == 2
        cache.close()
    finally:
        server.stop()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def test_script_flush_is_survived(cache: Cache) -> None:
    cache.set("k", 1, ttl=30)
    cache.connection.sync.script_flush()
    assert cache.get("k") == 1
    cache.connection.sync.script_flush()
    assert cache.set("k", 2, ttl=30)
    assert cache.get("k") == 2
    assert cache.stats().total.errors == 0


async def test_script_flush_is_survived_async(cache: Cache) -> None:
    await cache.aset("k", 1, ttl=30)
    cache.connection.sync.script_flush()
    assert await cache.aget("k") == 1
