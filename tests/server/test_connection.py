"""Client pools: bounded under load, one asyncio client per event loop."""

from __future__ import annotations

import asyncio

import redis

from cachewise import Cache


def our_clients(url: str, name: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == name)
    finally:
        client.close()


async def test_many_tasks_share_a_bounded_pool(embedded_url: str) -> None:
    name = "cw-bounded"
    cache = Cache(embedded_url, namespace="pool", max_connections=3, client_options={"client_name": name})
    try:
        await cache.aset("k", 1, ttl=30)
        seen: list[int] = []

        async def worker(i: int) -> object:
            value = await cache.aget("k")
            if i % 50 == 0:
                seen.append(our_clients(embedded_url, name))
            return value

        results = await asyncio.gather(*(worker(i) for i in range(300)))
        assert results == [1] * 300
        assert cache.stats().total.errors == 0
        assert max(seen) <= 3 + 1  # the async pool, plus at most the sync one
    finally:
        await cache.aclose()


async def test_slot_waiters_get_handed_a_slot_or_time_out(embedded_url: str) -> None:
    cache = Cache(embedded_url, namespace="pool", max_connections=1, pool_timeout=0.2)
    try:
        await cache.aset("k", 1, ttl=30)
        entry = cache.connection._loop_client()
        entry.busy = entry.size  # as if every connection were busy with a slow command
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, entry.release)  # ... that finishes in 50 ms: its slot passes to the waiter
        assert await cache.aget("k") == 1
        assert entry.busy == 0
        entry.busy = entry.size  # and one that does not finish in time: the waiter gives up, fails open
        assert await cache.aget("k", "fallback") == "fallback"
        assert cache.stats().total.errors == 1
        entry.release()
        assert entry.busy == 0 and not entry.waiting
        assert await cache.aget("k") == 1
    finally:
        await cache.aclose()


def test_each_event_loop_gets_its_own_client(embedded_url: str) -> None:
    with Cache(embedded_url, namespace="pool") as cache:

        async def use() -> object:
            await cache.aset("k", 2, ttl=30)
            return cache.connection.async_client()

        first, second = asyncio.run(use()), asyncio.run(use())
        assert first is not second
        assert cache.get("k") == 2
