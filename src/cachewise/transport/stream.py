"""A dedicated connection for a batch job: commands are written without waiting, their replies read later, in order.

A feature materialisation streams a table of millions of rows as batches of one script call each; it must not tie up
(or be timed out by) the short-timeout pool of online reads, and a batch is sent before the previous one's reply is
read, so the server writes one batch while the client encodes the next.  A :class:`Stream` is one connection to the
cache's server with the cache's options but its own reply timeout.  It is opened by
:meth:`cachewise.executor.Executor.stream`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import redis

__all__ = ["ClusterStream", "Stream"]


class Stream:
    """One connection of its own from ``make_pool(options)`` (a redis-py pool with options ``options``; see
    :meth:`cachewise.transport.connection.Connection.new_pool`)."""

    #: Whether a script call may only touch the keys of one hash slot (a Cluster): then a batch is one call per slot.
    by_slot = False

    def __init__(
        self, make_pool: Callable[[dict[str, Any]], Any], options: dict[str, Any], reply_timeout: float
    ) -> None:
        kwargs = dict(options)
        kwargs.pop("max_connections", None)
        kwargs.pop("timeout", None)
        kwargs["socket_timeout"] = reply_timeout
        kwargs["socket_connect_timeout"] = max(kwargs.get("socket_connect_timeout") or 0.0, 5.0)
        self._pool = make_pool(kwargs)
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


class ClusterStream:
    """:class:`Stream` on a Cluster: each command is routed by slot (split where its keys span slots) and sent with
    the cluster transport's long-lived connections, its reply kept for :meth:`receive`.  The commands of one
    :meth:`send` go out together (one round trip of wall time, every node working on its share in parallel), but are
    not overlapped with the encoding of the next batch as on one server."""

    by_slot = True

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._replies: collections.deque[Any] = collections.deque()

    def send(self, *payloads: bytes) -> None:
        from .command import Command
        from .routes import _args
        from .scripts import known_script

        commands: list[Command] = []
        for payload in payloads:
            args = _args(payload)
            name = args[0].upper()
            if name == b"SCRIPT":  # each node loads the scripts it is sent (NOSCRIPT is followed per node)
                self._replies.append(hashlib.sha1(args[2]).hexdigest().encode())
                continue
            script = known_script(args[1].decode()) if name == b"EVALSHA" else None
            keys = [k.decode() for k in args[3 : 3 + int(args[2])]] if name == b"EVALSHA" else []
            commands.append(Command("stream", [payload], [tuple(keys)], [script], strict=False))
        if commands:
            self._replies.extend(self._connection.send(Command.join("stream", commands, strict=False)))

    def receive(self) -> Any:
        reply = self._replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self, *, broken: bool = False) -> None:
        self._replies.clear()

    def __enter__(self) -> ClusterStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.close(broken=exc_type is not None)
