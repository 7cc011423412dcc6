"""Failover under load: a primary dies (or is failed over) while workers read, write and hit rate limits.

Each test starts its own topology on free ports (a node is killed: the session's shared cluster is not touched).
Eight threads share one :class:`~cachewise.Cache` and loop over cache-aside reads of a fixed "database", writes
read back, and rate-limit hits.  The assertions are the issue's: no exception reaches a caller, no answer differs
from the database row or the value just written (a miss, while the shard is down, is a correct answer: the loader
runs), and hits resume on the promoted replica within one second of the topology naming it.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cachewise import Cache, RateLimiter
from cachewise.server.cluster import EmbeddedCluster
from cachewise.server.embedded import EmbeddedServer
from cachewise.server.sentinel import EmbeddedSentinel
from tests.conftest import client_for

pytestmark = pytest.mark.slow

ROWS = {i: {"id": i, "name": f"row {i}"} for i in range(200)}
WORKERS = 8
#: How long after the topology names the new primary the hits must be back (seconds).
RESUME_WITHIN = 1.0


class Workload:
    """``WORKERS`` threads calling ``cache`` until :meth:`stop`; what went wrong is kept, never raised."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.limiter = RateLimiter(cache, 1_000_000, 60, name="failover")
        self.errors: list[BaseException] = []
        self.wrong: list[str] = []
        self.calls = 0
        #: Per worker, the count of its last write the cache took.
        self.last = [0] * WORKERS
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(WORKERS)]

    def __enter__(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        count = 0
        while not self._stop.is_set():
            count += 1
            i = rng.randrange(len(ROWS))
            try:
                got = self.cache.get_or_set(f"row:{i}", lambda i=i: dict(ROWS[i]), ttl=60)  # type: ignore[misc]
                if got != ROWS[i]:
                    self._note(f"row {i}: {got!r}")
                # a fresh key per write: a write acknowledged by a primary that dies before its replica has it is
                # lost (asynchronous replication; see the README), and an older value under the same key would
                # come back
                key = f"w:{n}:{count}"
                if self.cache.set(key, count, ttl=30):
                    self.last[n] = count
                back = self.cache.get(key)
                if back is not None and back != count:
                    self._note(f"{key}: wrote {count}, read {back!r}")
                self.limiter.hit(f"user:{n}")
            except BaseException as exc:  # any exception reaching a caller is a failure of the test
                with self._lock:
                    self.errors.append(exc)
            with self._lock:
                self.calls += 1

    def _note(self, what: str) -> None:
        with self._lock:
            self.wrong.append(what)

    def check(self) -> None:
        assert self.calls > 100, f"the workers barely ran ({self.calls} loops)"
        assert not self.errors, f"{len(self.errors)} exceptions reached callers, e.g. {self.errors[:3]!r}"
        assert not self.wrong, f"{len(self.wrong)} wrong answers, e.g. {self.wrong[:5]}"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the ``time.monotonic()`` when it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout:g} s")


def probe_hits(cache: Cache, key: str, value: Any) -> Callable[[], bool]:
    """Whether a plain read of ``key`` is a hit with ``value`` now (not a miss, not a failure)."""

    def hit() -> bool:
        before = cache.stats().total.hits
        return cache.get(key) == value and cache.stats().total.hits > before

    return hit


# -- Cluster -----------------------------------------------------------------------------------------------------------
@pytest.fixture
def own_cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(node_timeout_ms=1000) as cluster:
        yield cluster


def _node_of(cluster: EmbeddedCluster, port: int) -> EmbeddedServer:
    (node,) = [n for n in cluster.nodes if n.port == port]
    return node


def _promoted(cluster: EmbeddedCluster, dead: int, slot: int) -> Callable[[], bool]:
    """Whether a surviving node says another node than ``dead`` owns ``slot`` and is a primary in a healthy state."""

    def check() -> bool:
        for node in cluster.nodes:
            if node.port == dead or node.process is None or node.process.poll() is not None:
                continue
            try:
                with redis.Redis(port=node.port, socket_timeout=0.5) as client:
                    slots = client.execute_command("CLUSTER", "SLOTS")
                    state = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                continue
            if b"cluster_state:ok" not in state:
                return False
            return any(int(s[0]) <= slot <= int(s[1]) and int(s[2][1]) != dead for s in slots)
        return False

    return check


def test_a_killed_cluster_primary_fails_open_then_hits_resume_on_the_promoted_replica(
    own_cluster: EmbeddedCluster, unique_namespace: str
) -> None:
    from redis.crc import key_slot

    with Cache(own_cluster.url, namespace=unique_namespace) as cache:
        entry = cache.keyspace.entry("probe")
        slot = key_slot(entry.encode())
        raw: Any = client_for(own_cluster.url)
        try:
            victim = raw.get_node_from_key(entry)
            assert cache.set("probe", "here", ttl=300)
            assert cache.get("probe") == "here"
            raw.execute_command("WAIT", 1, 2000, target_nodes=victim)  # the replica has it before the kill
        finally:
            raw.close()
        with Workload(cache) as load:
            time.sleep(0.5)
            killed_at = time.monotonic()
            _node_of(own_cluster, victim.port).process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            promoted_at = wait_for(_promoted(own_cluster, victim.port, slot), 30, "the replica's promotion")
            resumed_at = wait_for(probe_hits(cache, "probe", "here"), 10, "hits on the promoted replica")
            time.sleep(0.5)  # and the workers keep going on the new topology
        load.check()
        print(
            f"cluster: promoted after {promoted_at - killed_at:.2f} s, hits back {resumed_at - promoted_at:.2f} s later"
        )
        assert resumed_at - promoted_at <= RESUME_WITHIN, (
            f"hits resumed {resumed_at - promoted_at:.2f} s after the promotion "
            f"(failover took {promoted_at - killed_at:.2f} s)"
        )


# -- Sentinel ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def own_sentinel() -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(down_after_ms=1000, failover_timeout_ms=5000) as sentinels:
        yield sentinels


def _sentinel_names_new_primary(sentinels: EmbeddedSentinel, old_port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            primary = sentinels.primary()
        except Exception:
            return False
        return primary is not None and primary.port != old_port

    return check


@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "SIGKILL"])
def test_a_sentinel_failover_fails_open_then_hits_resume_on_the_new_primary(
    own_sentinel: EmbeddedSentinel, unique_namespace: str, how: str
) -> None:
    with Cache(own_sentinel.url, namespace=unique_namespace) as cache:
        assert cache.set("probe", "here", ttl=300)
        old = own_sentinel.primary()
        with redis.Redis(port=old.port, socket_timeout=2) as client:
            assert client.get(cache.keyspace.entry("probe")) is not None  # on the set's primary, nowhere else
            client.execute_command("WAIT", 1, 2000)  # the replica has it before the failover
        with Workload(cache) as load:
            time.sleep(0.5)
            started = time.monotonic()
            if how == "SIGKILL":
                own_sentinel.kill_primary()
            else:
                threading.Thread(target=own_sentinel.failover, daemon=True).start()
            promoted_at = wait_for(_sentinel_names_new_primary(own_sentinel, old.port), 30, "the new primary")
            resumed_at = wait_for(probe_hits(cache, "probe", "here"), 10, "hits on the new primary")
            time.sleep(0.5)
        load.check()
        new = own_sentinel.primary()
        with redis.Redis(port=new.port, socket_timeout=2) as client:  # the workers wrote to the new primary
            assert client.get(cache.keyspace.entry(f"w:0:{load.last[0]}")) is not None
        print(f"{how}: promoted after {promoted_at - started:.2f} s, hits back {resumed_at - promoted_at:.2f} s later")
        assert resumed_at - promoted_at <= RESUME_WITHIN, (
            f"hits resumed {resumed_at - promoted_at:.2f} s after the promotion "
            f"(failover took {promoted_at - started:.2f} s)"
        )
