"""Sentinel: the primary of a Sentinel-managed set, found and followed with redis-py's own sentinel support.

A ``redis+sentinel://`` URL names the sentinels and the monitored service.  Every connection the package opens to the
data node (the hot path's, the asyncio pools', a batch job's, the fill listener's) is a redis-py
``SentinelManagedConnection``: it asks the sentinels for the primary's address each time it connects.  A failover
therefore needs nothing of ours: Sentinel makes the old primary a replica and closes its clients' connections
(``CLIENT KILL TYPE normal``), a killed primary stops answering; either way the calls in flight fail open, and the
next connection goes to the promoted replica.  Nothing here elects or watches: the sentinels do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from ..forks import reset_in_child
from .urls import ServerAddress

__all__ = ["AsyncPrimaryConnection", "PrimaryConnection", "PrimaryWatch", "SentinelTarget"]

log = logging.getLogger("cachewise.sentinel")


class PrimaryConnection(redis.sentinel.SentinelManagedConnection):
    """redis-py's sentinel-managed connection, also when it is used without its pool's checkout (the package's lean
    pool sends on it directly): a send on a closed connection asks the sentinels for the primary first, rather than
    connecting to the default address (``localhost:6379``) or to the primary of before a failover."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class AsyncPrimaryConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """:class:`PrimaryConnection` for asyncio."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


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
            self.address.service, self._sync, connection_class=PrimaryConnection, **self._data_kwargs(kwargs)
        )

    def async_pool(self, kwargs: dict[str, Any]) -> redis.asyncio.ConnectionPool:
        """An asyncio pool of connections to the primary (one per event loop, as for one server)."""
        manager = redis.asyncio.sentinel.Sentinel(list(self.address.seeds), sentinel_kwargs=self.sentinel_kwargs)
        pool_class: Any = redis.asyncio.sentinel.SentinelConnectionPool
        return pool_class(  # type: ignore[no-any-return]
            self.address.service, manager, connection_class=AsyncPrimaryConnection, **self._data_kwargs(kwargs)
        )

    def primary(self) -> tuple[str, int] | None:
        """The primary's address as the sentinels name it now, or None when none answers."""
        try:
            host, port = self._sync.discover_master(self.address.service)
        except (redis.RedisError, OSError):
            return None
        return str(host), int(port)


class PrimaryWatch:
    """Asks the sentinels every ``interval`` seconds which node is the primary, and calls ``switched()`` when that
    changes (it answers False once nobody needs the watch: the thread ends).

    Needed because a primary that Sentinel failed over (``SENTINEL FAILOVER``, or a partition) may keep answering as
    a writable primary for seconds before the sentinels reconfigure it as a replica and close its clients: writes
    sent to it meanwhile would be lost, reads would be stale.  So the connections are dropped as soon as the
    sentinels name another node, and the next ones go to it.
    """

    def __init__(self, target: SentinelTarget, switched: Callable[[], bool], interval: float = 0.25) -> None:
        self._target = target
        self._switched = switched
        self._interval = interval
        self._stop = threading.Event()
        self.primary = target.primary()
        self._thread = threading.Thread(target=self._run, name="cachewise-sentinel-watch", daemon=True)
        self._thread.start()
        reset_in_child(self)

    def reset_after_fork(self) -> None:
        """A forked child has no watching thread: it starts its own (unless this watch was stopped)."""
        if self._stop.is_set():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cachewise-sentinel-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self._interval):
            now = self._target.primary()
            if now is not None and now != self.primary:
                previous, self.primary = self.primary, now
                if previous is not None:
                    log.info("the sentinels name a new primary for %s: reconnecting", self._target.address.service)
                    if not self._switched():
                        return

    def stop(self) -> None:
        self._stop.set()
