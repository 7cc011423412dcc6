"""The cache on a real local Redis Cluster (3 primaries, 3 replicas, from the embedded binary, started once per
session): reads and writes routed by slot, a namespace spread over every primary, O(1) invalidation, single flight.

The whole contract suite does not run on the cluster yet (see CHANGELOG.md: which parts are still one-server only).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cachewise import Cache
from tests.conftest import client_for, keys_without_ttl


@pytest.fixture
def ccache(cluster_url: str, unique_namespace: str) -> Iterator[Cache]:
    with Cache(cluster_url, namespace=unique_namespace) as cache:
        yield cache
    try:
        assert not keys_without_ttl(cluster_url, unique_namespace)
    finally:
        client = client_for(cluster_url)
        keys = list(client.scan_iter(match=f"{unique_namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _incr_calls(client: Any) -> int:
    per_node = client.info("commandstats", target_nodes=client.PRIMARIES)
    return sum(int(info.get("cmdstat_incr", {}).get("calls", 0)) for info in per_node.values())


def test_a_namespace_spreads_over_every_primary_and_one_incr_invalidates_it(ccache: Cache, cluster_url: str) -> None:
    """10 000 entries of one namespace: every primary holds 25-42 % of them, and one INCR (a version bump, or a
    tag) makes every one a miss.  Every key has a TTL (the fixture checks)."""
    count = 10_000
    for i in range(count):
        assert ccache.set(f"p:{i}", i, ttl=60, tags=["all"] if i % 2 else ())
    client = client_for(cluster_url)
    try:
        pattern = f"{ccache.keyspace.namespace}:p:*"
        shares = [
            sum(1 for _ in node.redis_connection.scan_iter(match=pattern, count=1000)) / count
            for node in client.get_primaries()
        ]
        assert len(shares) == 3 and all(0.25 <= s <= 0.42 for s in shares), shares
        assert ccache.get("p:7", tags=["all"]) == 7 and ccache.get("p:8") == 8
        before = _incr_calls(client)
        assert ccache.invalidate_tags("all") == 1
        assert _incr_calls(client) - before == 1  # one INCR, whatever the number of keys
        assert all(ccache.get(f"p:{i}", tags=["all"]) is None for i in range(1, count, 2))
        assert ccache.get("p:8") == 8  # untagged: untouched
        before = _incr_calls(client)
        assert ccache.bump_version("p") == 1
        assert _incr_calls(client) - before == 1
        assert all(ccache.get(f"p:{i}") is None for i in range(0, count, 2))
    finally:
        client.close()
    assert ccache.stats().total.errors == 0


def test_tags_versions_and_deletes_route_by_slot(ccache: Cache) -> None:
    ccache.set("t:1", "v", ttl=60, tags=("a", "b"))
    assert ccache.get("t:1", tags=("a", "b")) == "v" and ccache.get("t:1") == "v"  # the second: a recheck read
    assert ccache.invalidate_tags("a") == 1
    assert ccache.get("t:1", tags=("a", "b")) is None
    ccache.set("d:1", 1, ttl=60)
    assert ccache.delete("d:1") is True and ccache.get("d:1") is None


def test_get_or_set_sync_and_async_load_once(ccache: Cache) -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "loaded"

    assert ccache.get_or_set("x:1", load, ttl=60) == "loaded" == ccache.get_or_set("x:1", load, ttl=60)

    async def main() -> tuple[object, object]:
        return await ccache.aget_or_set("y:1", load, ttl=60), await ccache.aget("y:1")

    assert asyncio.run(main()) == ("loaded", "loaded")
    assert len(calls) == 2


def test_50_threads_on_a_cold_key_load_it_once(ccache: Cache) -> None:
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def load() -> str:
        with lock:
            calls.append(1)
        return "v"

    results: list[object] = []

    def call() -> None:
        barrier.wait()
        results.append(ccache.get_or_set("cold:1", load, ttl=60))

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    total = ccache.stats().total
    assert results == ["v"] * 50, results
    assert len(calls) == 1, f"{len(calls)} loads ({total.errors} errors, {total.wait_timeouts} wait timeouts)"


def test_embedded_cluster_url_starts_a_private_cluster_and_stops_it() -> None:
    with Cache("embedded+cluster://", namespace="cwtest-embedded-cluster") as cache:
        cluster = cache.connection.server
        assert cluster is not None and len(cluster.nodes) == 6
        assert cache.set("k", 1, ttl=30) and cache.get("k") == 1
        processes = [node.process for node in cluster.nodes]
    assert all(p is not None and p.poll() is not None for p in processes)  # no orphan servers


def test_waiters_are_woken_on_sharded_pubsub(ccache: Cache, cluster_url: str, unique_namespace: str) -> None:
    """A fill is announced with ``SPUBLISH`` on the entry's own shard channel (in its slot: one shard, not the whole
    cluster), to which a waiter of another cache subscribed on that node; no classic ``PUBLISH`` is sent."""
    client: Any = client_for(cluster_url)
    entry = ccache.keyspace.entry("slow")
    channel = ccache.keyspace.fill_channel_of(entry)
    assert "{" in channel and ccache.connection.sharded_pubsub
    node = client.get_node_from_key(entry)
    assert client.get_node_from_key(channel).name == node.name  # the channel is in the entry's slot

    def calls(command: str) -> int:
        per_node = client.info("commandstats", target_nodes=client.PRIMARIES)
        return sum(int(info.get(f"cmdstat_{command}", {}).get("calls", 0)) for info in per_node.values())

    published, spublished = calls("publish"), calls("spublish")
    started = threading.Event()
    seen: list[str] = []

    def slow() -> str:
        started.set()
        time.sleep(0.5)
        return "v"

    leader = threading.Thread(target=lambda: ccache.get_or_set("slow", slow, ttl=60))
    leader.start()
    try:
        assert started.wait(10)
        with Cache(cluster_url, namespace=unique_namespace) as other:
            assert other.get_or_set("slow", lambda: seen.append("loaded") or "mine", ttl=60) == "v"
            subscribed = client.execute_command("PUBSUB", "SHARDCHANNELS", target_nodes=node)
            total = other.stats().total
            assert other.connection.notifier.sharded
    finally:
        leader.join(10)
        client.close()
    assert seen == []  # it waited for the leader instead of loading
    assert total.waits >= 1 and total.wait_timeouts == 0
    assert channel.encode() in subscribed
    assert calls("spublish") > spublished and calls("publish") == published


def test_a_burst_of_threads_is_bounded_by_max_connections_per_node(cluster_url: str, unique_namespace: str) -> None:
    """300 threads at once open at most ``max_connections`` connections to each node (the others wait for a free
    one), and every call is answered from the cache: none fails for want of a connection."""
    with Cache(cluster_url, namespace=unique_namespace, max_connections=4) as cache:
        for i in range(30):
            assert cache.set(f"k:{i}", i, ttl=60)
        barrier = threading.Barrier(300)
        got: list[Any] = []

        def call(n: int) -> None:
            barrier.wait()
            got.append(cache.get(f"k:{n % 30}") == n % 30)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        pools = cache.connection._lean  # type: ignore[union-attr]
        assert got == [True] * 300 and cache.stats().total.errors == 0
        assert pools and all(pool._created <= 4 for pool in pools.values()), {n: p._created for n, p in pools.items()}
