"""The embedded Sentinel set: real processes (1 primary, 1 replica, 3 sentinels) that redis-py's Sentinel client
finds, that fail over on ``SENTINEL FAILOVER`` and when the primary dies, and that leave nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from cachewise import EmbeddedServerError
from cachewise.server.sentinel import EmbeddedSentinel, release_sentinel, shared_sentinel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel() as started:
        yield started


def client_of(started: EmbeddedSentinel) -> Sentinel:
    """A fresh redis-py Sentinel client: its pools find the primary anew (an old pool keeps its connections)."""
    return Sentinel([("127.0.0.1", port) for port in started.sentinel_ports], socket_timeout=2)


def key() -> str:
    return f"t:{uuid.uuid4().hex}"


def test_url_ports_and_roles(sentinel_set: EmbeddedSentinel) -> None:
    ports = sentinel_set.sentinel_ports
    assert len(ports) == 3 and len(sentinel_set.nodes) == 2
    assert (
        sentinel_set.url == f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]},127.0.0.1:{ports[2]}/cachewise"
    )
    assert len({*ports, *sentinel_set.ports}) == 5
    primary = sentinel_set.primary()
    assert primary in sentinel_set.nodes
    with redis.Redis(host="127.0.0.1", port=primary.port, decode_responses=True) as client:
        assert client.execute_command("ROLE")[0] == "master"
    (replica,) = (node for node in sentinel_set.nodes if node is not primary)
    with redis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True) as client:
        info = client.info("replication")
    assert info["role"] == "slave" and info["master_port"] == primary.port and info["master_link_status"] == "up"


def test_redis_py_writes_to_the_primary_and_reads_a_replica(sentinel_set: EmbeddedSentinel) -> None:
    sentinel_set.wait_ready()
    client = client_of(sentinel_set)
    primary = client.master_for("cachewise", decode_responses=True)
    name = key()
    assert primary.set(name, "v")
    assert primary.get(name) == "v"
    assert primary.wait(1, 2000) == 1  # replicated before the read below
    replica = client.slave_for("cachewise", decode_responses=True)
    assert replica.get(name) == "v"
    with pytest.raises(redis.ReadOnlyError):
        replica.set(name, "w")
    primary.close()
    replica.close()


def test_failover_moves_the_primary_and_writes_go_to_the_new_one(sentinel_set: EmbeddedSentinel) -> None:
    old = sentinel_set.primary()
    new = sentinel_set.failover(timeout=20)
    assert new is not old and new in sentinel_set.nodes and sentinel_set.primary() is new
    primary = client_of(sentinel_set).master_for("cachewise", decode_responses=True)
    name = key()
    assert primary.set(name, "after")
    assert primary.get(name) == "after"
    assert primary.connection_pool.get_master_address() == ("127.0.0.1", new.port)
    primary.close()
    # The sentinels then turn the old primary into a replica of the new one (some seconds later).
    sentinel_set.wait_ready(timeout=25)
    with redis.Redis(host="127.0.0.1", port=old.port, decode_responses=True) as client:
        assert client.info("replication")["master_port"] == new.port


def test_a_killed_primary_is_replaced_and_stop_leaves_nothing() -> None:
    started = EmbeddedSentinel().start()
    try:
        before = client_of(started).master_for("cachewise", decode_responses=True)
        name = key()
        before.set(name, "kept")
        assert before.wait(1, 2000) == 1
        before.close()
        killed = started.kill_primary()
        assert killed.process is not None and killed.process.poll() is not None
        promoted = started.wait_promoted(killed.port, timeout=20)
        assert promoted is not killed and started.primary() is promoted
        after = client_of(started).master_for("cachewise", decode_responses=True)
        assert after.get(name) == "kept"  # replicated before the crash
        assert after.set(key(), "new")
        after.close()
    finally:
        processes = [node.process for node in [*started.nodes, *started.sentinel_nodes]]
        directory = started.directory
        started.stop()
    assert len(processes) == 5 and all(p is not None and p.poll() is not None for p in processes)
    assert directory is not None and not Path(directory).exists()
    started.stop()  # idempotent
    assert started.directory is None and not started.nodes and not started.sentinel_nodes
    with pytest.raises(EmbeddedServerError, match="start"):
        _ = started.url


def test_shared_set_is_counted() -> None:
    first = shared_sentinel()
    try:
        second = shared_sentinel()
        assert second is first
        release_sentinel(second)
        assert first.sentinel_nodes  # still one user
    finally:
        processes = [node.process for node in [*first.nodes, *first.sentinel_nodes]]
        release_sentinel(first)
    assert not first.sentinel_nodes and all(p is not None and p.poll() is not None for p in processes)


def test_arguments_are_checked() -> None:
    with pytest.raises(EmbeddedServerError, match="replica"):
        EmbeddedSentinel(replicas=0)
    with pytest.raises(EmbeddedServerError, match="sentinel"):
        EmbeddedSentinel(sentinels=0)
    with pytest.raises(EmbeddedServerError, match="service"):
        EmbeddedSentinel(service="my service")


def test_a_port_taken_before_the_process_binds_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program may take a picked port first: that process starts on another one (1 sentinel: quorum 1)."""
    import socket

    from cachewise.server import sentinel as module

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken_port = holder.getsockname()[1]
        real = module.free_port
        handed: list[int] = []

        def first_taken(taken: set[int] | None = None) -> int:
            port = taken_port if not handed else real(taken)
            handed.append(port)
            return port

        monkeypatch.setattr(module, "free_port", first_taken)
        with EmbeddedSentinel(sentinels=1) as started:
            assert started.quorum == 1 and taken_port not in [*started.ports, *started.sentinel_ports]
            assert handed[0] == taken_port and started.primary() is started.nodes[0]


def test_embedded_sentinel_url_starts_a_private_set_and_stops_it() -> None:
    from cachewise import Cache

    with Cache("embedded+sentinel://", namespace="cwtest-embedded-sentinel") as cache:
        sentinels = cache.connection.server
        assert sentinels is not None and len(sentinels.nodes) == 2 and len(sentinels.sentinel_nodes) == 3
        assert cache.connection.address.sentinel
        assert cache.set("k", 1, ttl=30) and cache.get("k") == 1
        processes = [node.process for node in [*sentinels.nodes, *sentinels.sentinel_nodes]]
    assert all(p is not None and p.poll() is not None for p in processes)  # no orphan servers
