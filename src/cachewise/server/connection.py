"""Client pools for one server, sync and asyncio, with timeouts suited to a cache.

redis-py's asyncio clients belong to the event loop that created them, so a :class:`Connection` keeps one per
running loop (``asyncio.run`` twice, or a test framework's loop per test, just works).  Pools block for a free
connection (up to the operation timeout) rather than failing when many callers arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from .embedded import EmbeddedServer, release_server, shared_server
from .urls import ServerAddress, parse_url, redact

__all__ = ["ClientOptions", "Connection"]


@dataclass(frozen=True)
class ClientOptions:
    """How to talk to the server.  Seconds; short, because a slow cache is worse than none."""

    #: Longest wait for one command's reply.
    timeout: float = 0.5
    #: Longest wait to open a connection.
    connect_timeout: float = 0.5
    #: Connections per pool (one sync pool, one asyncio pool per event loop).
    max_connections: int = 64
    #: Extra keyword arguments for redis-py's connection pool (e.g. ``ssl_ca_certs``).
    extra: tuple[tuple[str, Any], ...] = ()

    def pool_kwargs(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "max_connections": self.max_connections,
            "timeout": self.timeout,  # wait for a free pooled connection
            "retry": Retry(NoBackoff(), 1),  # one retry: a pooled connection may predate a server restart
            "protocol": 2,
            "health_check_interval": 30,
            **dict(self.extra),
        }


class Connection:
    """The clients of one server URL; starts (or joins) the embedded server for ``embedded://``."""

    def __init__(self, url: str | None = None, options: ClientOptions | None = None) -> None:
        self.address: ServerAddress = parse_url(url)
        self.options = options or ClientOptions()
        self.server: EmbeddedServer | None = None
        if self.address.embedded:
            self.server = shared_server(self.address.directory)
            target = self.server.url
        else:
            target = self.address.url
        self._target = target
        self.sync: redis.Redis = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(target, **self.options.pool_kwargs())
        )
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop | None, redis.asyncio.Redis | None] = (None, None)
        self.closed = False

    @property
    def target(self) -> str:
        """The URL actually connected to (for ``embedded://``, the embedded server's socket)."""
        return self._target

    def async_client(self) -> redis.asyncio.Redis:
        """The asyncio client of the running event loop."""
        loop = asyncio.get_running_loop()
        last_loop, last_client = self._last
        if loop is last_loop and last_client is not None:
            return last_client
        client = self._async.get(loop)
        if client is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(self._target, **self.options.pool_kwargs())
            client = redis.asyncio.Redis(connection_pool=pool)
            self._async[loop] = client
        self._last = (loop, client)
        return client

    def close(self) -> None:
        """Close the sync pool, forget asyncio pools, and release the embedded server."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.sync.close()
            self.sync.connection_pool.disconnect()
        self._async.clear()
        self._last = (None, None)
        if self.server is not None:
            release_server(self.server)
            self.server = None

    async def aclose(self) -> None:
        """Close the running loop's asyncio pool, then everything :meth:`close` closes."""
        try:
            loop = asyncio.get_running_loop()
            client = self._async.pop(loop, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Connection({redact(self.address.url)!r})"
