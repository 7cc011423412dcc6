"""Client pools: bounded under load, one asyncio client per event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from cachewise import Cache
from cachewise.server.embedded import EmbeddedServer
from cachewise.transport.resp import command

pytestmark = pytest.mark.one_server(
    "the one-server transport's own connection handling (the cluster's: tests/test_cluster.py)"
)


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


# -- pipelined / apipelined: ready-encoded commands, raw replies -------------------------------------------------
def _client_ids(url: str, name: str) -> list[int]:
    client = redis.Redis.from_url(url)
    try:
        return [int(c["id"]) for c in client.client_list() if c.get("name") == name]
    finally:
        client.close()


def _kill(url: str, client_id: int) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert client.client_kill_filter(_id=str(client_id)) == 1
    finally:
        client.close()


def _mixed_payload(ns: str) -> tuple[bytes, int]:
    """SET (with a TTL), GET, HGETALL of a hash, HGETALL of a string (WRONGTYPE), and reads after the error."""
    string, hash_key = f"{ns}:s", f"{ns}:h"
    payload = b"".join(
        (
            command("SET", string, b"v\xff", "PX", 60_000),
            command("GET", string),
            command("HGETALL", hash_key),
            command("HGETALL", string),
            command("GET", string),
            command("HMGET", hash_key, "g", "nope"),
            command("ECHO", ""),
        )
    )
    return payload, 7


def _check_mixed_replies(replies: list[Any]) -> None:
    assert len(replies) == 7
    assert replies[0] in (b"OK", "OK") and replies[1] == b"v\xff"
    flat = replies[2]
    assert isinstance(flat, list) and len(flat) == 4  # RESP2, no reply callback: field, value, field, value
    assert dict(zip(flat[::2], flat[1::2])) == {b"f": b"1", b"g": b"2"}
    assert isinstance(replies[3], redis.ResponseError) and "WRONGTYPE" in str(replies[3])
    assert replies[4:] == [b"v\xff", [b"2", None], b""]  # the replies after the error are still the right ones


def test_pipelined_returns_raw_replies_in_order_and_errors_in_place(cache: Cache, raw: redis.Redis) -> None:
    ns = cache.namespace
    raw.hset(f"{ns}:h", mapping={"f": "1", "g": "2"})
    raw.pexpire(f"{ns}:h", 60_000)
    connection = cache.connection
    (first_id,) = connection.pipelined(command("CLIENT", "ID"), 1)
    payload, count = _mixed_payload(ns)
    _check_mixed_replies(connection.pipelined(payload, count))
    # the connection went back to the pool in a clean state: it is reused, and answers the next commands correctly
    assert connection.pipelined(command("CLIENT", "ID") + command("GET", f"{ns}:s"), 2) == [first_id, b"v\xff"]
    assert connection.sync.get(f"{ns}:s") == b"v\xff"
    assert 0 < raw.pttl(f"{ns}:s") <= 60_000


def test_apipelined_returns_raw_replies_in_order_and_errors_in_place(cache: Cache, raw: redis.Redis) -> None:
    ns = cache.namespace
    raw.hset(f"{ns}:h", mapping={"f": "1", "g": "2"})
    raw.pexpire(f"{ns}:h", 60_000)

    async def main() -> None:
        connection = cache.connection
        try:
            (first_id,) = await connection.apipelined(command("CLIENT", "ID"), 1)
            payload, count = _mixed_payload(ns)
            _check_mixed_replies(await connection.apipelined(payload, count))
            again = await connection.apipelined(command("CLIENT", "ID") + command("GET", f"{ns}:s"), 2)
            assert again == [first_id, b"v\xff"]
            assert await connection.acommand("GET", f"{ns}:s") == b"v\xff"
        finally:
            await cache.connection.aclose_loop()

    asyncio.run(main())


def _read_payload(ns: str) -> tuple[bytes, int]:
    return command("CLIENT", "ID") + command("GET", f"{ns}:k") + command("ECHO", "after"), 3


def test_pipelined_after_the_server_dropped_our_connection(server_url: str, unique_namespace: str) -> None:
    """Our pooled connection is killed on the server (by id: the shared server's other clients are left alone);
    the next read still succeeds, on a new connection."""
    name = f"cw-{unique_namespace}"
    with Cache(server_url, namespace=unique_namespace, client_options={"client_name": name}) as cache:
        cache.connection.sync.set(f"{unique_namespace}:k", "v", px=60_000)
        payload, count = _read_payload(unique_namespace)
        first_id, value, echo = cache.connection.pipelined(payload, count)
        assert (value, echo) == (b"v", b"after") and first_id in _client_ids(server_url, name)
        _kill(server_url, first_id)
        second_id, value, echo = cache.connection.pipelined(payload, count)
        assert (value, echo) == (b"v", b"after")
        ids = _client_ids(server_url, name)
        assert second_id != first_id and second_id in ids and first_id not in ids


def test_pipelined_retries_a_connection_that_died_after_the_pool_handed_it_out(
    server_url: str, unique_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool checks a connection before handing it out; one that the server drops just after that check fails
    on the first write or read, before any reply: ``pipelined`` itself sends the payload once more, on a fresh
    connection."""
    name = f"cw-{unique_namespace}"
    with Cache(server_url, namespace=unique_namespace, client_options={"client_name": name}) as cache:
        cache.connection.sync.set(f"{unique_namespace}:k", "v", px=60_000)
        payload, count = _read_payload(unique_namespace)
        first_id = cache.connection.pipelined(payload, count)[0]
        pool = cache.connection._lean
        real_get = pool.get
        handed_out = 0

        def get() -> Any:
            nonlocal handed_out
            conn = real_get()
            handed_out += 1
            if handed_out == 1:
                _kill(server_url, first_id)  # the server drops it now, after the pool handed it out
            return conn

        monkeypatch.setattr(pool, "get", get)
        second_id, value, echo = cache.connection.pipelined(payload, count)
        assert handed_out == 2  # the retry
        assert (value, echo) == (b"v", b"after")
        ids = _client_ids(server_url, name)
        assert second_id != first_id and second_id in ids and first_id not in ids
        monkeypatch.undo()
        assert cache.connection.pipelined(payload, count) == [second_id, b"v", b"after"]


def test_apipelined_after_the_server_dropped_our_connection(server_url: str, unique_namespace: str) -> None:
    name = f"cw-{unique_namespace}"
    payload, count = _read_payload(unique_namespace)

    async def main(cache: Cache) -> None:
        connection = cache.connection
        try:
            first_id, value, echo = await connection.apipelined(payload, count)
            assert (value, echo) == (b"v", b"after") and first_id in _client_ids(server_url, name)
            _kill(server_url, first_id)
            second_id, value, echo = await connection.apipelined(payload, count)
            assert (value, echo) == (b"v", b"after")
            assert second_id != first_id and second_id in _client_ids(server_url, name)
            assert first_id not in _client_ids(server_url, name)

            # and one dropped after the loop's idle list handed it out: apipelined's own retry
            loop_client_class: Any = type(connection._loop_client())
            real_checkout = loop_client_class.checkout
            handed_out = 0

            def checkout(self: Any) -> Any:
                nonlocal handed_out
                conn = real_checkout(self)
                handed_out += 1
                if handed_out == 1:
                    _kill(server_url, second_id)
                return conn

            loop_client_class.checkout = checkout
            try:
                third_id, value, echo = await connection.apipelined(payload, count)
            finally:
                loop_client_class.checkout = real_checkout
            assert handed_out == 2
            assert (value, echo) == (b"v", b"after") and third_id not in (first_id, second_id)
            assert await connection.apipelined(payload, count) == [third_id, b"v", b"after"]
        finally:
            await connection.aclose_loop()

    with Cache(server_url, namespace=unique_namespace, client_options={"client_name": name}) as cache:
        cache.connection.sync.set(f"{unique_namespace}:k", "v", px=60_000)
        asyncio.run(main(cache))


def _stats(client: redis.Redis) -> tuple[int, int]:
    """Connections the server has accepted, and ECHO commands it has run."""
    echo = client.info("commandstats").get("cmdstat_echo", {}).get("calls", 0)
    return int(client.info("stats")["total_connections_received"]), int(echo)


def test_pipelined_after_the_server_closed_every_connection() -> None:
    """On a server of this test's own (``CLIENT KILL TYPE normal`` would disturb a shared one): the read after the
    kill runs once, on one new connection; sync, then asyncio."""
    with EmbeddedServer() as server:
        admin = redis.Redis.from_url(server.url)
        try:
            with Cache(server.url, namespace="killed") as cache:
                cache.connection.sync.set("killed:k", "v", px=60_000)
                payload = command("ECHO", "a") + command("GET", "killed:k") + command("ECHO", "b")
                assert cache.connection.pipelined(payload, 3) == [b"a", b"v", b"b"]
                admin.ping()
                assert admin.client_kill_filter(_type="normal") >= 1  # every client but admin (SKIPME)
                connections, echoes = _stats(admin)
                assert cache.connection.pipelined(payload, 3) == [b"a", b"v", b"b"]
                assert _stats(admin) == (connections + 1, echoes + 2)

                async def main() -> None:
                    try:
                        assert await cache.connection.apipelined(payload, 3) == [b"a", b"v", b"b"]
                        assert admin.client_kill_filter(_type="normal") >= 1
                        connections, echoes = _stats(admin)
                        assert await cache.connection.apipelined(payload, 3) == [b"a", b"v", b"b"]
                        assert _stats(admin) == (connections + 1, echoes + 2)
                    finally:
                        await cache.connection.aclose_loop()

                asyncio.run(main())
        finally:
            admin.close()


def _stalled_payload(ns: str) -> bytes:
    """ECHO, then a BLPOP that blocks on the server for 2 s, then ECHO: with a 0.2 s reply timeout the read fails
    after the first reply, while the other two are still to come on that connection."""
    return command("ECHO", "first") + command("BLPOP", f"{ns}:empty", "2") + command("ECHO", "late")


def _keep_connections_open_on_read_errors(monkeypatch: pytest.MonkeyPatch, connection_class: Any) -> None:
    """Make the client library leave a connection open when a read fails (redis-py closes it itself today): then
    only ``pipelined``'s own clean-up stands between a half-read connection and the pool."""
    real = connection_class.read_response

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        return real(self, *args, **{**kwargs, "disconnect_on_error": False})

    monkeypatch.setattr(connection_class, "read_response", read_response)


@pytest.mark.parametrize("library_closes", [True, False], ids=["library-closes", "library-leaves-open"])
def test_a_failed_pipelined_never_leaves_a_half_read_connection_in_the_pool(
    server_url: str, unique_namespace: str, library_closes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Cache(server_url, namespace=unique_namespace, timeout=0.5) as cache:
        connection = cache.connection
        if not library_closes:
            _keep_connections_open_on_read_errors(monkeypatch, connection.sync.connection_pool.connection_class)
        follow_up = command("ECHO", "b") + command("ECHO", "c")
        # more replies expected than commands sent: the wait for the missing one times out
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            connection.pipelined(command("ECHO", "a"), 2)
        assert connection.pipelined(follow_up, 2) == [b"b", b"c"]
        # replies still pending when the read fails: they must never be read as the next call's replies
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            connection.pipelined(_stalled_payload(unique_namespace), 3)
        assert connection.pipelined(follow_up, 2) == [b"b", b"c"]
        assert connection.sync.echo("d") == b"d"


def _keep_async_connections_open_on_read_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`_keep_connections_open_on_read_errors` for redis-py's asyncio connections."""
    import redis.asyncio.connection as aconn

    real = aconn.AbstractConnection.read_response

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await real(self, *args, **{**kwargs, "disconnect_on_error": False})

    monkeypatch.setattr(aconn.AbstractConnection, "read_response", read_response)


@pytest.mark.parametrize("library_closes", [True, False], ids=["library-closes", "library-leaves-open"])
def test_a_failed_apipelined_never_leaves_a_half_read_connection_in_the_pool(
    server_url: str, unique_namespace: str, library_closes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main(cache: Cache) -> None:
        connection = cache.connection
        if not library_closes:
            _keep_async_connections_open_on_read_errors(monkeypatch)
        follow_up = command("ECHO", "b") + command("ECHO", "c")
        try:
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                await connection.apipelined(command("ECHO", "a"), 2)
            assert await connection.apipelined(follow_up, 2) == [b"b", b"c"]
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                await connection.apipelined(_stalled_payload(unique_namespace), 3)
            assert await connection.apipelined(follow_up, 2) == [b"b", b"c"]
            assert await connection.acommand("ECHO", "d") == b"d"
        finally:
            await connection.aclose_loop()

    with Cache(server_url, namespace=unique_namespace, timeout=0.5) as cache:
        asyncio.run(main(cache))


def test_a_connection_lost_after_some_replies_is_not_sent_again(cache: Cache, raw: redis.Redis) -> None:
    """The retry is only for a connection found dead before any reply: once replies were read, the commands ran,
    and sending them again would run them twice.  (QUIT: the server answers, then closes the connection.)"""
    counter = f"{cache.namespace}:n"
    raw.set(counter, 0, px=60_000)
    payload = command("INCR", counter) + command("QUIT") + command("GET", counter)
    with pytest.raises(redis.ConnectionError):
        cache.connection.pipelined(payload, 3)
    assert raw.get(counter) == b"1"

    async def main() -> None:
        try:
            with pytest.raises(redis.ConnectionError):
                await cache.connection.apipelined(payload, 3)
        finally:
            await cache.connection.aclose_loop()

    asyncio.run(main())
    assert raw.get(counter) == b"2"
    assert cache.connection.pipelined(command("GET", counter), 1) == [b"2"]


def test_a_command_in_flight_when_its_loop_pool_closes_does_not_leak_its_connection(
    server_url: str, unique_namespace: str, raw: redis.Redis
) -> None:
    cache = Cache(server_url, namespace=unique_namespace, timeout=5.0)  # the BLPOP below waits 1 s
    connection = cache.connection

    async def main() -> None:
        entry = connection._loop_client()
        used: list[Any] = []
        real_checkout = type(entry).checkout

        def checkout(self: Any) -> Any:
            conn = real_checkout(self)
            used.append(conn)
            return conn

        type(entry).checkout = checkout  # type: ignore[method-assign]
        try:
            blocked = int(raw.info("clients")["blocked_clients"])
            slow = asyncio.create_task(connection.apipelined(command("BLPOP", f"{unique_namespace}:none", "1"), 1))
            for _ in range(500):  # until the BLPOP is on the wire, and blocked on the server
                await asyncio.sleep(0.01)
                if int(raw.info("clients")["blocked_clients"]) > blocked:
                    break
            else:
                raise AssertionError("the BLPOP never reached the server")
            await connection.aclose_loop()
            assert await slow == [None]
        finally:
            type(entry).checkout = real_checkout  # type: ignore[method-assign]
        assert entry.closed and entry.idle == []  # not put back into the closed pool ...
        assert len(used) == 1 and not used[0].is_connected  # ... and closed

    try:
        asyncio.run(main())
    finally:
        cache.close()
