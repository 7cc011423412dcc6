"""Client pools for one server, sync and asyncio, with timeouts suited to a cache.

redis-py's asyncio clients belong to the event loop that created them, so a :class:`Connection` keeps one per
running loop (``asyncio.run`` twice, or a test framework's loop per test, just works).  Pools block for a free
connection (up to ``pool_timeout``) rather than failing when many callers arrive at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

from ..breaker import CircuitBreaker
from ..errors import ConfigurationError
from ..server.embedded import EmbeddedServer, release_server, shared_server
from .notify import FillNotifier
from .pool import LeanPool
from .sentinel import PrimaryWatch, SentinelTarget
from .urls import ServerAddress, parse_url, redact

__all__ = ["ClientOptions", "Connection", "aread_replies", "read_replies"]


def read_replies(conn: Any, count: int, into: list[Any] | None = None) -> list[Any]:
    """Read ``count`` raw replies from ``conn`` (appended to ``into``): an error reply takes its command's place as
    a ``ResponseError`` (consumed, so the next reply is next on the wire), it is not raised."""
    replies = [] if into is None else into
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


async def aread_replies(conn: Any, count: int, into: list[Any] | None = None) -> list[Any]:
    """Async :func:`read_replies`."""
    replies = [] if into is None else into
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


@dataclass(frozen=True)
class ClientOptions:
    """How to talk to the server.  Seconds; short, because a slow cache is worse than none."""

    #: Longest wait for one command's reply.
    timeout: float = 0.5
    #: Longest wait to open a connection.
    connect_timeout: float = 0.5
    #: Longest wait for a free pooled connection when all are busy (a burst of callers), before failing open.
    pool_timeout: float = 2.0
    #: Connections per pool (one sync pool, one asyncio pool per event loop), and at most as many commands at once.
    max_connections: int = 64
    #: Failures in a row that open the circuit breaker, and seconds it stays open before a probe.
    breaker_threshold: int = 5
    breaker_reset: float = 1.0
    #: Extra keyword arguments for redis-py's connection pool (e.g. ``ssl_ca_certs``).
    extra: tuple[tuple[str, Any], ...] = ()

    def pool_kwargs(self, *, asyncio: bool = False) -> dict[str, Any]:
        """Keyword arguments for a redis-py connection pool (``asyncio``: for ``redis.asyncio``, whose retry is a
        class of its own: given the sync one, redis-py converts it with a ``UserWarning`` per pool)."""
        retry = AsyncRetry if asyncio else Retry
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,  # wait for a free pooled connection
            # One retry after a dropped connection (a pooled one may predate a server restart); none after a timeout,
            # which would only double the wait on a hanging server.
            "retry": retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "protocol": 2,
            "health_check_interval": 30,
            **dict(self.extra),
        }


def tracking_factory(pool: Any, protocol: int, timeout: float) -> Callable[[], Any]:
    """Unconnected connections like ``pool``'s, speaking RESP ``protocol``, for a local tier's invalidation link."""
    kwargs = {**pool.connection_kwargs, "protocol": protocol, "socket_timeout": max(timeout, 1.0)}
    kwargs.pop("retry", None)  # the link reconnects itself, after flushing the tier

    def factory() -> Any:
        return pool.connection_class(**kwargs)

    return factory


class _Raw:
    """Ready-encoded commands without a :class:`~cachewise.transport.command.Command` (what :meth:`Connection.send`
    reads of one)."""

    __slots__ = ("count", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload = payload
        self.count = count


class _LoopClient:
    """The asyncio client of one event loop, and a bound on the commands it has in flight.

    A counter plus a queue of waiting futures, not an ``asyncio.Semaphore``: the uncontended path (nearly every
    command) then costs an integer compare instead of a coroutine.  Only one event loop touches it.
    """

    __slots__ = ("busy", "client", "closed", "epoch", "idle", "size", "waiting")

    def __init__(self, client: redis.asyncio.Redis, size: int) -> None:
        self.client = client
        self.size = size
        self.busy = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        #: Idle connections of the packed-command path (:meth:`Connection.asend`): redis-py's asyncio pool
        #: records metrics on every checkout; this list, bounded by ``busy``/``size``, does not.
        self.idle: list[Any] = []
        self.closed = False
        #: The connection's primary epoch its idle connections belong to (Sentinel: see ``Connection.asend``).
        self.epoch = 0

    def checkout(self) -> Any:
        """An idle connection of the packed-command path, or a new one (it connects on first use)."""
        if self.idle:
            return self.idle.pop()
        pool: Any = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    async def wait_for_slot(self, timeout: float) -> None:
        """Queue until a running command hands its slot over (``asyncio.TimeoutError`` after ``timeout``)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                future.cancel()
            raise

    def release(self) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes to the waiter; busy stays as it is
                return
        self.busy -= 1


class Connection:
    """The clients of one server URL; starts (or joins) the embedded server for ``embedded://``.

    Every command of the package is sent ready-encoded (:meth:`send`, :meth:`asend`; only the
    :class:`~cachewise.executor.Executor` calls them) on the lean pool: at most ``max_connections`` in a process, and
    as many per event loop, whose use is bounded by a counter (redis-py's asyncio blocking pool costs ~10 µs a
    command).
    :attr:`sync` and :meth:`acommand` are redis-py's own clients of the same server, for other commands; they
    connect only when used.
    """

    def __init__(self, url: str | None = None, options: ClientOptions | None = None) -> None:
        self.address: ServerAddress = parse_url(url)
        self.options = options or ClientOptions()
        self.server: Any = None
        #: For a Sentinel URL: how the primary is found (every pool's connections ask it when they connect).
        self.sentinel: SentinelTarget | None = None
        if self.address.embedded:
            self.server = shared_server(self.address.directory)
            target: str = self.server.url
        elif self.address.scheme == "embedded+sentinel":
            from ..server.sentinel import shared_sentinel

            self.server = shared_sentinel()
            self.address = parse_url(self.server.url)
            target = self.address.url
        else:
            target = self.address.url
        if self.address.sentinel:
            self.sentinel = SentinelTarget(self.address, self.options.connect_timeout)
        self._target = target
        self.breaker = CircuitBreaker(
            self.options.breaker_threshold, self.options.breaker_reset, name=redact(self.address.url)
        )
        if self.address.scheme == "rediss" and not any(k == "ssl_check_hostname" for k, _ in self.options.extra):
            # Verify the server's certificate names the host (older redis-py releases do not by default).
            self.options = dataclasses.replace(self.options, extra=(*self.options.extra, ("ssl_check_hostname", True)))
        try:
            pool = self.new_pool(self.options.pool_kwargs(), blocking=True)
        except (ValueError, TypeError) as exc:  # redis-py's message may quote part of the URL: never pass it on
            self._release_server()
            raise ConfigurationError(
                f"cannot use server URL {redact(self.address.url)!r} ({type(exc).__name__}): check its form, e.g. "
                "redis://user:password@host:6379/0, with special characters in the password percent-encoded"
            ) from None
        self.sync: redis.Redis = redis.Redis(connection_pool=pool)
        # The hot path's pool (send/asend: every command of the package): same connection class and options, leaner
        # checkout.
        self._lean = LeanPool(
            lambda: pool.connection_class(**pool.connection_kwargs),
            self.options.max_connections,
            self.options.pool_timeout,
        )
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        self._last_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._last: _LoopClient | None = None
        self._notifier: FillNotifier | None = None
        self._notifier_lock = threading.Lock()
        self.closed = False
        #: Fills are announced on the namespace's classic channel (sharded pub/sub is a Cluster's).
        self.sharded_pubsub = False
        #: How many times the sentinels named a new primary (the asyncio pools drop connections of an older one).
        self._primary_epoch = 0
        self._watch: PrimaryWatch | None = None
        if self.sentinel is not None:
            me = weakref.ref(self)
            self._watch = PrimaryWatch(self.sentinel, lambda: (c := me()) is not None and c._primary_switched())

    def new_pool(self, kwargs: dict[str, Any], *, blocking: bool = False) -> redis.ConnectionPool:
        """A redis-py pool of connections to the server (to the current primary, for a Sentinel URL), with pool
        options ``kwargs``; ``blocking``: one that waits for a free connection rather than failing."""
        if self.sentinel is not None:
            return self.sentinel.pool(kwargs)
        if blocking:
            return redis.BlockingConnectionPool.from_url(self._target, **kwargs)
        return redis.ConnectionPool.from_url(self._target, **{k: v for k, v in kwargs.items() if k != "timeout"})

    def _new_async_pool(self, kwargs: dict[str, Any]) -> redis.asyncio.ConnectionPool:
        if self.sentinel is not None:
            return self.sentinel.async_pool(kwargs)
        return redis.asyncio.ConnectionPool.from_url(self._target, **kwargs)

    def _primary_switched(self) -> bool:
        """The sentinels name another primary: every idle connection (to the old one) goes, the ones in use go when
        they come back; the next ones connect to the new primary.  False once closed."""
        if self.closed:
            return False
        self._primary_epoch += 1
        self._lean.close()
        with contextlib.suppress(Exception):
            self.sync.connection_pool.disconnect(inuse_connections=False)
        return True

    def _release_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if isinstance(server, EmbeddedServer):
            release_server(server)
        else:
            from ..server.sentinel import release_sentinel

            release_sentinel(server)

    @property
    def notifier(self) -> FillNotifier:
        """The pub/sub listener that wakes callers waiting for another caller's load (started on first use)."""
        notifier = self._notifier
        if notifier is None:
            with self._notifier_lock:
                if self._notifier is None:
                    options = self.options
                    kwargs = {"protocol": 2, "socket_timeout": max(options.timeout, 1.0), **dict(options.extra)}
                    self._notifier = FillNotifier(
                        self._target,
                        connect_timeout=options.connect_timeout,
                        pool_kwargs=kwargs,
                        client=self._pubsub_client if self.sentinel is not None else None,
                    )
                notifier = self._notifier
        return notifier

    def _pubsub_client(self) -> redis.Redis:
        """A client of the current primary for the fill listener (Sentinel URLs)."""
        kwargs = {
            "protocol": 2,
            "socket_timeout": max(self.options.timeout, 1.0),
            "socket_connect_timeout": self.options.connect_timeout,
            **dict(self.options.extra),
        }
        return redis.Redis(connection_pool=self.new_pool(kwargs))

    def tracking_links(self, protocol: int) -> list[tuple[str, Callable[[], Any]]]:
        """The server's invalidation link for a local tier (:mod:`cachewise.local.tracking`): a name, and a factory
        of unconnected redis-py connections to it (for a Sentinel URL, to the current primary)."""
        return [("server", tracking_factory(self.sync.connection_pool, protocol, self.options.timeout))]

    @property
    def target(self) -> str:
        """The URL actually connected to (for ``embedded://``, the embedded server's socket)."""
        return self._target

    def send(self, command: Any) -> list[Any]:
        """Send every part of ``command`` (a :class:`~cachewise.transport.command.Command`: ``count`` commands
        already encoded in the protocol, see :mod:`cachewise.transport.resp`) as one write on one pooled connection
        and read their raw replies (no reply callbacks: ``HGETALL`` gives a flat list under RESP2).  An error reply
        takes its command's place as a ``ResponseError``, it is not raised.

        A connection found dead before any reply was read (say, it predates a server restart) is replaced and the
        whole payload sent once more, as redis-py's own retry on a connection error does.  Safe for reads and for
        most of this package's scripts (idempotent, or refusing a second write under a lease already spent); a
        rate-limit hit whose connection dropped after the server ran it but before its reply arrived is counted
        twice, as it was with redis-py's retry.  A connection that fails mid-way is disconnected before it is
        reused (it reconnects), so no reply of one call is ever read by another.
        """
        pool = self._lean
        for attempt in (1, 2):
            conn = pool.get()
            replies: list[Any] = []
            try:
                conn.send_packed_command([command.payload])
                for _ in range(command.count):  # read_replies(), inline: every command pays for a call
                    try:
                        replies.append(conn.read_response())
                    except ResponseError as exc:  # consumed: the next reply is next on the wire
                        replies.append(exc)
                return replies
            except RedisConnectionError:
                conn.disconnect()
                if attempt == 2 or replies:
                    raise
            except BaseException:
                conn.disconnect()  # replies may be pending on it
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def pipelined(self, payload: bytes, count: int) -> list[Any]:
        """:meth:`send` of ``count`` commands already encoded as ``payload`` (raw replies, error replies in place)."""
        return self.send(_Raw(payload, count))

    async def apipelined(self, payload: bytes, count: int) -> list[Any]:
        """Async :meth:`pipelined`."""
        return await self.asend(_Raw(payload, count))

    async def asend(self, command: Any) -> list[Any]:
        """Async :meth:`send`, with the running loop's client (bounded like :meth:`acommand`)."""
        payload, count = command.payload, command.count
        entry = await self._acquire()
        if entry.epoch != self._primary_epoch:  # the sentinels named a new primary: drop the old one's connections
            stale, entry.idle, entry.epoch = entry.idle, [], self._primary_epoch
            for old in stale:
                with contextlib.suppress(Exception):
                    await old.disconnect()
        try:
            for attempt in (1, 2):
                conn = entry.checkout()
                replies: list[Any] = []
                try:
                    await conn.send_packed_command([payload])
                    for _ in range(count):  # aread_replies(), inline: every command pays for a coroutine
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
                    return replies
                except RedisConnectionError:
                    await conn.disconnect()
                    if attempt == 2 or replies:
                        raise
                except BaseException:
                    await conn.disconnect()
                    raise
                finally:
                    if entry.closed or entry.epoch != self._primary_epoch:  # closed, or the primary changed
                        await conn.disconnect()
                    else:
                        entry.idle.append(conn)  # a disconnected one reconnects on its next use
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            entry.release()

    def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        if self._last_loop is not None and self._last_loop() is loop and self._last is not None:
            return self._last
        entry = self._async.get(loop)
        if entry is None:
            kwargs = self.options.pool_kwargs(asyncio=True)
            size = kwargs.pop("max_connections")
            kwargs.pop("timeout")
            pool = self._new_async_pool(kwargs)
            entry = _LoopClient(redis.asyncio.Redis(connection_pool=pool), size)
            self._async[loop] = entry
        self._last_loop, self._last = weakref.ref(loop), entry
        return entry

    def async_client(self) -> redis.asyncio.Redis:
        """The asyncio client of the running event loop (not bounded by the semaphore: prefer :meth:`acommand`)."""
        return self._loop_client().client

    async def acommand(self, *args: Any) -> Any:
        """Run one command with the running loop's client; waits (up to ``pool_timeout``) for a free connection."""
        entry = await self._acquire()
        try:
            return await entry.client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            entry.release()

    async def _acquire(self) -> _LoopClient:
        """The running loop's client, with one of its slots taken (give it back with ``release()``)."""
        entry = self._loop_client()
        if entry.busy < entry.size:
            entry.busy += 1
        else:
            await entry.wait_for_slot(self.options.pool_timeout)
        return entry

    def close(self) -> None:
        """Close the sync pool, forget asyncio pools, and release the embedded server."""
        if self.closed:
            return
        self.closed = True
        if self._watch is not None:
            self._watch.stop()
        with contextlib.suppress(Exception):
            self._lean.close()
        with contextlib.suppress(Exception):
            self.sync.close()
            self.sync.connection_pool.disconnect()
        self._async.clear()
        self._last_loop, self._last = None, None
        if self._notifier is not None:
            self._notifier.close()
        self._release_server()

    async def aclose_loop(self) -> None:
        """Close the running loop's asyncio pool (before ``asyncio.run`` closes the loop under it)."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        if self._last is entry:
            self._last_loop, self._last = None, None
        if entry is not None:
            entry.closed = True
            idle, entry.idle = entry.idle, []
            for conn in idle:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            with contextlib.suppress(Exception):
                await entry.client.aclose()
            manager = getattr(entry.client.connection_pool, "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):  # a Sentinel URL: this loop's clients of the sentinels
                with contextlib.suppress(Exception):
                    await sentinel.aclose()

    async def aclose(self) -> None:
        """Close the running loop's asyncio pool, then everything :meth:`close` closes."""
        try:
            await self.aclose_loop()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Connection({redact(self.address.url)!r})"
