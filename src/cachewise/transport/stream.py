"""A dedicated connection for a batch job: commands are written without waiting, their replies read later, in order.

A feature materialisation streams a table of millions of rows as batches of one script call each; it must not tie up
(or be timed out by) the short-timeout pool of online reads, and a batch is sent before the previous one's reply is
read, so the server writes one batch while the client encodes the next.  A :class:`Stream` is one connection to the
cache's server with the cache's options but its own reply timeout.  It is opened by
:meth:`cachewise.executor.Executor.stream`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis

__all__ = ["Stream"]


class Stream:
    """One connection of its own to ``target`` (a URL) with redis-py pool options ``options``."""

    def __init__(self, target: str, options: dict[str, Any], reply_timeout: float) -> None:
        kwargs = dict(options)
        kwargs.pop("max_connections", None)
        kwargs.pop("timeout", None)
        kwargs["socket_timeout"] = reply_timeout
        kwargs["socket_connect_timeout"] = max(kwargs.get("socket_connect_timeout") or 0.0, 5.0)
        self._pool = redis.ConnectionPool.from_url(target, **kwargs)
        self._conn: Any = self._pool.get_connection()
        self._broken = False

    def send(self, *payloads: bytes) -> None:
        """Write ready-encoded commands; their replies are read by :meth:`receive`, in order."""
        try:
            self._conn.send_packed_command(list(payloads))
        except BaseException:
            self._broken = True
            raise

    def receive(self) -> Any:
        """The next reply (an error reply is raised)."""
        try:
            return self._conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            self._broken = True
            raise

    def close(self, *, broken: bool = False) -> None:
        """Give the connection up; ``broken``: replies may still be pending on it, so it is dropped, not reused."""
        if broken or self._broken:
            with contextlib.suppress(Exception):
                self._conn.disconnect()
        with contextlib.suppress(Exception):
            self._pool.release(self._conn)
        with contextlib.suppress(Exception):
            self._pool.disconnect()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.close(broken=exc_type is not None)
