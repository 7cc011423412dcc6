"""A lean blocking pool of redis-py connections, for the commands cachewise sends as ready-made protocol bytes.

redis-py's ``BlockingConnectionPool`` records metrics and checks each connection on every checkout and return,
~7 µs a command here: a fifth of a cached hit.  This pool is a LIFO list under one lock: a checkout is a pop, a
return an append.  What it keeps from redis-py: its connections (the same class and options as the cache's
redis-py pool, so TLS, auth, timeouts and health checks are the same), a bound on their number with a wait of up to
``timeout`` for a free one, and fork safety (a child process starts with an empty pool and never uses, nor closes,
its parent's sockets).  A connection that failed is disconnected by its user before it comes back (it reconnects
on its next use), so no reply is ever left pending on an idle one; one that died while idle fails its next send
and is replaced by the caller's single retry.

:meth:`LeanPool.close` disconnects the idle connections and those in use as they come back; like redis-py's pools,
the pool still works afterwards (it opens new connections on demand).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from ..forks import reset_in_child

__all__ = ["LeanPool"]


class LeanPool:
    """At most ``size`` connections made by ``make()``; :meth:`get` waits up to ``timeout`` s for a free one."""

    def __init__(self, make: Callable[[], Any], size: int, timeout: float) -> None:
        self._make = make
        self._size = size
        self._timeout = timeout
        self._generation = 0
        self.reset_after_fork()
        reset_in_child(self)

    def reset_after_fork(self) -> None:
        """An empty pool with a fresh lock (at start, and in a forked child: the parent's connections are not ours
        to use or to close, so they are forgotten, not disconnected)."""
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._idle: list[Any] = []
        self._created = 0
        self._waiting = 0
        self._pid = os.getpid()
        self._generation += 1
        #: The generation each live connection was made in: one of an earlier generation (before a close, or the
        #: parent's) is never put back.
        self._born: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        """A connection (connected on first use); give it back with :meth:`release`."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._created >= self._size:
                self._wait()
                if self._idle:
                    return self._idle.pop()
            self._created += 1
            generation = self._generation
        try:
            conn = self._make()
        except BaseException:
            with self._lock:
                if generation == self._generation:
                    self._created -= 1
            raise
        with self._lock:
            self._born[conn] = generation
        return conn

    def _wait(self) -> None:
        """Under the lock: wait until a connection is returned (or a slot frees up), at most ``timeout`` s."""
        deadline = time.monotonic() + self._timeout
        self._waiting += 1
        try:
            while not self._idle and self._created >= self._size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RedisConnectionError(
                        f"no free connection to the cache server within {self._timeout:g} s (all {self._size} in "
                        "use): raise max_connections or pool_timeout"
                    )
                self._freed.wait(left)
        finally:
            self._waiting -= 1

    def release(self, conn: Any) -> None:
        """Give ``conn`` back (disconnect it first if a reply may still be pending on it)."""
        with self._lock:
            if self._born.get(conn) == self._generation:
                self._idle.append(conn)
                if self._waiting:
                    self._freed.notify()
                return
            stale = conn in self._born  # made before a close: ours to close; absent: the parent process's
            self._born.pop(conn, None)
        if stale:
            conn.disconnect()

    def discard(self, conn: Any) -> None:
        """``conn`` is not coming back: disconnect it and free its slot."""
        with self._lock:
            born = self._born.pop(conn, None)
            if born is None:
                return  # the parent process's: its socket is the parent's to close
            if born == self._generation:
                self._created -= 1
                if self._waiting:
                    self._freed.notify()
        conn.disconnect()

    def close(self) -> None:
        """Disconnect the idle connections now and those in use when they come back; new ones open on demand."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._created = 0
            self._generation += 1
            self._freed.notify_all()
        for conn in idle:
            conn.disconnect()
