"""Server fixtures for the whole suite: a real embedded Valkey, and the system Redis when there is one.

Server-facing tests take ``server_url`` and run once per server kind.  The embedded Valkey is started by the suite
itself, so the suite passes on a machine with no server installed.  The system Redis (``CACHEWISE_TEST_REDIS``,
default ``redis://127.0.0.1:6379/0``) is used when it answers; in CI (``CI=true``) a missing one is a failure.

SQL-facing tests take ``database_url`` and run once on a SQLite file and once on the system PostgreSQL
(``CACHEWISE_TEST_POSTGRES``), under the same rules.

Contract tests take ``mode`` and run twice: once calling the sync API, once its async twins (see ``tests/modes.py``).

Each test gets its own namespace; at teardown every key in it must have a TTL (the seed's §5 rule, checked after
every test), and the keys are removed so that a shared server is left as it was found.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis

from cachewise import Cache
from cachewise.server.cluster import EmbeddedCluster
from cachewise.server.embedded import EmbeddedServer
from cachewise.server.sentinel import EmbeddedSentinel
from cachewise.transport.urls import parse_url
from tests.modes import MODES, Mode

SYSTEM_REDIS = os.environ.get("CACHEWISE_TEST_REDIS", "redis://127.0.0.1:6379/0")
SYSTEM_POSTGRES = os.environ.get("CACHEWISE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SERVER_KINDS = ("embedded", "redis", "cluster", "sentinel")


def client_for(url: str) -> redis.Redis:
    """A plain redis-py client of ``url``: ``redis.Redis``, ``RedisCluster`` for a cluster URL (it routes by slot,
    scans every primary and splits multi-key deletes), or the primary's client for a Sentinel URL.  The URL is read
    by cachewise's own parser (its seeds, service and credentials)."""
    address = parse_url(url)
    if address.sentinel:
        from redis.sentinel import Sentinel

        sentinels = Sentinel(list(address.seeds), socket_timeout=2)
        primary = sentinels.master_for(address.service, socket_timeout=2, db=address.db, **address.params)
        return primary  # type: ignore[no-any-return]
    if address.cluster:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(host, port) for host, port in address.seeds]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **address.params)  # type: ignore[return-value]
    return redis.Redis.from_url(url)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` (from :func:`client_for`) is a cluster's."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def writes_for(client: Any, keys: Iterable[str]) -> int:
    """How many writes one command reading ``keys`` costs: one, or on a cluster one per primary holding them (sent
    together: still one round trip of wall time)."""
    if not is_cluster(client):
        return 1
    return len({client.get_node_from_key(key).name for key in keys})


def command_calls(client: Any, command: str) -> int:
    """How many times the server (every primary of a cluster) ran ``command`` (``INFO commandstats``)."""
    if not is_cluster(client):
        stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    per_node = client.info("commandstats", target_nodes=client.PRIMARIES)
    return sum(int(info.get(f"cmdstat_{command}", {}).get("calls", 0)) for info in per_node.values())


def _reachable(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def embedded_url() -> Iterator[str]:
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url() -> str:
    problem = _reachable(SYSTEM_REDIS)
    if problem is not None:
        message = f"system Redis at {SYSTEM_REDIS} is unreachable ({problem})"
        if IN_CI:
            pytest.fail(message + "; in CI every server must be up (.ci/run starts it)")
        pytest.skip(message)
    return SYSTEM_REDIS


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    """A local Sentinel set (1 primary, 1 replica, 3 sentinels) from the embedded binary, started once per session."""
    with EmbeddedSentinel() as sentinels:
        yield sentinels.url


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """A local Redis Cluster (3 primaries, 3 replicas) from the embedded binary, started once per session."""
    with EmbeddedCluster() as cluster:
        yield cluster.url


#: The kinds that are many servers behind one URL: a test marked ``one_server`` is not run on them.
MANY_SERVER_KINDS = ("cluster", "sentinel")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``one_server(reason)`` is about one server (its connection, its raw commands): it runs on the
    embedded server and the system Redis, and is deselected — reported, not skipped — on a cluster or Sentinel set."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.get_closest_marker("one_server") is not None and params.get("server_url") in MANY_SERVER_KINDS:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=SERVER_KINDS, scope="session")
def server_url(request: pytest.FixtureRequest) -> str:
    """A real server's URL: the embedded Valkey, the system Redis, a local Cluster (3 primaries, 3 replicas), a local
    Sentinel set (1 primary, 1 replica, 3 sentinels)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def keys_without_ttl(url: str, namespace: str) -> list[str]:
    """Keys of ``namespace`` on the server that would live forever."""
    client = client_for(url)
    try:
        return [k.decode() for k in client.scan_iter(match=f"{namespace}:*", count=1000) if client.pttl(k) < 0]
    finally:
        client.close()


def drop_namespace(url: str, namespace: str) -> None:
    client = client_for(url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture
def unique_namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; afterwards every key in it must have a TTL, and the keys are removed."""
    namespace = f"cwtest-{uuid.uuid4().hex[:12]}"
    yield namespace
    if "server_url" in request.fixturenames:
        url = request.getfixturevalue("server_url")
        try:
            offenders = keys_without_ttl(url, namespace)
        finally:
            drop_namespace(url, namespace)
        assert not offenders, f"keys written without a TTL: {offenders}"


@pytest.fixture
def cache(server_url: str, unique_namespace: str) -> Iterator[Cache]:
    """A Cache on each server kind, in a fresh namespace."""
    with Cache(server_url, namespace=unique_namespace) as c:
        yield c


@pytest.fixture
def raw(server_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the same server, to look at what cachewise stored."""
    client = client_for(server_url)
    yield client
    client.close()


@pytest.fixture(params=MODES, ids=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[Mode]:
    """How the test calls the API: ``"sync"`` or ``"async"``, a :class:`~tests.modes.Mode`.

    ``c = mode(cache)`` is a proxy: ``c.get(...)`` is ``cache.get(...)`` in sync mode, and ``cache.aget(...)`` run to
    completion on one event loop owned by this fixture for the whole test in async mode (result returned, exceptions
    raised unchanged); attributes without an async twin (``c.namespace``, ``c.stats()``) are ``cache``'s own.  The
    test itself stays a ``def``.  At the end, in async mode, the asyncio pools this loop opened on the wrapped
    objects' caches are closed before any other fixture is torn down (a ``Cache`` closed first would forget them
    unclosed), then the loop is closed.
    """
    chosen = Mode(request.param)
    chosen.on_first_use = lambda: request.node.addfinalizer(chosen.close_pools)  # LIFO: before other teardowns
    yield chosen
    chosen.close()


def _postgres_problem(url: str) -> str | None:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


@pytest.fixture(scope="session")
def postgres_database_url() -> str:
    problem = _postgres_problem(SYSTEM_POSTGRES)
    if problem is not None:
        message = f"PostgreSQL at {SYSTEM_POSTGRES} is unreachable ({problem})"
        if IN_CI:
            pytest.fail(message + "; in CI every service must be up (.ci/run starts it)")
        pytest.skip(message)
    return SYSTEM_POSTGRES


@pytest.fixture(params=("sqlite", "postgres"), scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """A real SQL database's SQLAlchemy URL: once a SQLite file, once the system PostgreSQL.  Tests create their
    own uniquely named tables and drop them."""
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    return url
