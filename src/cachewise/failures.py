"""What the cache does when the server fails: count, log without flooding, carry on.

A read that fails is a miss, a write that fails is skipped; the application gets the loader's answer either way
(the cache is an optimisation, never the source of truth).  Invalidations that fail raise
:class:`~cachewise.errors.InvalidationError` instead, because a lost invalidation means stale data.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["OUTAGE_ERRORS", "SERVER_ERRORS", "CircuitOpen", "ErrorLog"]

#: Exceptions that mean "the server could not do it": the cache fails open on these.
#: (asyncio's TimeoutError is raised while waiting for a free pooled connection; on Python 3.10 it is no OSError.)
SERVER_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
#: The errors that mean the server is down or hanging (they count towards opening the circuit breaker); an error
#: reply (OOM, READONLY, WRONGTYPE...) comes from a server that is up, and does not.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


class CircuitOpen(RedisConnectionError):
    """Raised inside cachewise when the circuit breaker is open: the call skipped the server (never reaches you)."""


log = logging.getLogger("cachewise")


class ErrorLog:
    """Logs server errors at most once per ``interval`` seconds per kind, with the count of those held back."""

    def __init__(self, interval: float = 10.0, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.logger = logger
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def error(self, operation: str, exc: BaseException) -> None:
        """A server error the cache carried on after."""
        self.log(f"{operation}:{type(exc).__name__}", f"cache {operation} failed, carrying on without the cache: {exc}")

    def log(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` unless one of the same ``kind`` was logged less than ``interval`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -1e9) < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        more = f" ({held} more like it since the last message)" if held else ""
        self.logger.log(level, "%s%s", message, more)
