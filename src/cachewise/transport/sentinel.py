"""Sentinel: the primary of a Sentinel-managed set, found and followed with redis-py's own sentinel support.

A ``redis+sentinel://`` URL names the sentinels and the monitored service.  Every connection the package opens to the
data node (the hot path's, the asyncio pools', a batch job's, the fill listener's) is a redis-py
``SentinelManagedConnection``: it asks the sentinels for the primary's address each time it connects.  A failover
therefore needs nothing of ours: Sentinel makes the old primary a replica and closes its clients' connections
(``CLIENT KILL TYPE normal``), a killed primary stops answering; either way the calls in flight fail open, and the
next connection goes to the promoted replica.  Nothing here elects or watches: the sentinels do.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from .urls import ServerAddress

__all__ = ["SentinelTarget"]


class SentinelTarget:
    """Connection pools to the current primary of ``address`` (a parsed ``redis+sentinel://`` URL)."""

    def __init__(self, address: ServerAddress, connect_timeout: float) -> None:
        self.address = address
        own = dict(address.sentinel_options)
        #: Options of the connections to the sentinels themselves (their own password, if they have one).
        self.sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": max(connect_timeout, 0.5),
            "socket_connect_timeout": connect_timeout,
            **({"password": own["sentinel_password"]} if "sentinel_password" in own else {}),
            **({"username": own["sentinel_username"]} if "sentinel_username" in own else {}),
        }
        self._sync = redis.sentinel.Sentinel(list(address.seeds), sentinel_kwargs=self.sentinel_kwargs)

    def _data_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        data = {k: v for k, v in kwargs.items() if k != "timeout"}  # a BlockingConnectionPool's option only
        return {**data, **self.address.params, "db": self.address.db}

    def pool(self, kwargs: dict[str, Any]) -> redis.ConnectionPool:
        """A blocking-I/O pool of connections to the primary (redis-py pool options ``kwargs``)."""
        return redis.sentinel.SentinelConnectionPool(  # type: ignore[no-untyped-call]
            self.address.service, self._sync, **self._data_kwargs(kwargs)
        )

    def async_pool(self, kwargs: dict[str, Any]) -> redis.asyncio.ConnectionPool:
        """An asyncio pool of connections to the primary (one per event loop, as for one server)."""
        manager = redis.asyncio.sentinel.Sentinel(list(self.address.seeds), sentinel_kwargs=self.sentinel_kwargs)
        pool_class: Any = redis.asyncio.sentinel.SentinelConnectionPool
        return pool_class(self.address.service, manager, **self._data_kwargs(kwargs))  # type: ignore[no-any-return]

    def primary(self) -> tuple[str, int] | None:
        """The primary's address as the sentinels name it now, or None when none answers."""
        try:
            host, port = self._sync.discover_master(self.address.service)
        except (redis.RedisError, OSError):
            return None
        return str(host), int(port)
