"""A lean blocking pool of redis-py connections, for the commands cachewise sends as ready-made protocol bytes.

redis-py's ``BlockingConnectionPool`` records metrics and checks each connection on every checkout and return,
~7 µs a command here: a fifth of a cached hit.  This pool is a LIFO list under one lock: a checkout is a pop, a
return an append.  What it keeps from redis-py: its connections (the same class and options as the cache's
redis-py pool, so TLS, auth, timeouts and health checks are the same), a bound on their number with a wait of up to
``timeout`` for a free one, and fork safety (a child process never uses its parent's sockets).  A connection that
failed is disconnected by its user before it comes back (it reconnects on its next use), so no reply is ever left
pending on an idle one; one that died while idle fails its next send and is replaced by the caller's single retry.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["LeanPool"]


class LeanPool:
    """At most ``size`` connections made by ``make()``; :meth:`get` waits up to ``timeout`` s for a free one."""

    def __init__(self, make: Callable[[], Any], size: int, timeout: float) -> None:
        self._make = make
        self._size = size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._idle: list[Any] = []
        self._created = 0
        self._waiting = 0
        self._pid = os.getpid()
        #: The connections made in this process (after a fork, the parent's are not in it).
        self._owned: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed = False

    def get(self) -> Any:
        """A connection (connected on first use); give it back with :meth:`release`."""
        with self._lock:
            if self._pid != os.getpid():
                self._forget_parent()
            if self._idle:
                return self._idle.pop()
            if self._closed:
                raise RedisConnectionError("the cache's connection pool is closed")
            if self._created >= self._size:
                self._wait()
                if self._idle:
                    return self._idle.pop()
            self._created += 1
        try:
            conn = self._make()
        except BaseException:
            with self._lock:
                self._created -= 1
            raise
        with self._lock:
            self._owned.add(conn)
        return conn

    def _wait(self) -> None:
        """Under the lock: wait until a connection is returned (or a slot frees up), at most ``timeout`` s."""
        deadline = time.monotonic() + self._timeout
        self._waiting += 1
        try:
            while not self._idle and self._created >= self._size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
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
            if self._pid != os.getpid():
                self._forget_parent()
            if conn not in self._owned:
                return  # a connection of the parent process: never reused here
            if self._closed:
                conn.disconnect()
                self._owned.discard(conn)
                self._created -= 1
                return
            self._idle.append(conn)
            if self._waiting:
                self._freed.notify()

    def discard(self, conn: Any) -> None:
        """``conn`` is not coming back: disconnect it and free its slot."""
        with self._lock:
            if self._pid != os.getpid():
                self._forget_parent()
            if conn not in self._owned:
                return  # a connection of the parent process: its socket is the parent's to close
            self._owned.discard(conn)
            self._created -= 1
            if self._waiting:
                self._freed.notify()
        conn.disconnect()

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's connections without closing them (the parent still uses them)."""
        self._idle = []
        self._owned = weakref.WeakSet()
        self._created = 0
        self._waiting = 0
        self._pid = os.getpid()

    def close(self) -> None:
        """Disconnect the idle connections; those in use are disconnected when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._created -= len(idle)
            self._freed.notify_all()
        for conn in idle:
            conn.disconnect()
