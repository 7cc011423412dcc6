"""The one guarded path to the server: every command of every component goes through an :class:`Executor`.

A component (the cache, the read-through engine, the rate limiter, the session store, the feature store) builds a
ready :class:`~cachewise.transport.command.Command` and hands it here.  The executor is the only place that

* asks the circuit breaker whether the server may be called (an open breaker skips the call at once),
* sends the command and reads its replies (:meth:`Connection.send <cachewise.transport.connection.Connection.send>`),
* loads the Lua scripts a server answers ``NOSCRIPT`` for (it restarted, or ran ``SCRIPT FLUSH``) and sends those
  parts again,
* times the round trip and counts it, tells the breaker how the server did, and classifies, counts and logs a
  failure (:meth:`Reporter.failure <cachewise.report.Reporter.failure>`).

What a failure *means* stays with the caller: a read fails open (a miss), a rate-limit hit follows its
``on_error``, an invalidation raises :class:`~cachewise.errors.InvalidationError`.  So the executor reports every
failure and then hands it back: :meth:`Executor.attempt` returns a :class:`Failed`, :meth:`Executor.run` raises it.

This is the choke point where a Cluster router (which node serves each part's keys), Prometheus observations and
OpenTelemetry spans go.  The sync and async paths share every step but the send itself.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from .failures import SERVER_ERRORS, CircuitOpen
from .report import Reporter
from .stats import FOLD_AT, Counters
from .transport.cluster import ClusterConnection
from .transport.command import Command
from .transport.connect import AnyConnection
from .transport.stream import ClusterStream, Stream

__all__ = ["Executor", "Failed"]

_CIRCUIT_OPEN = "circuit breaker open"


class Failed:
    """What :meth:`Executor.attempt` returns when the server did not answer a command (or the breaker skipped it):
    the failure is already counted, logged and told to the breaker; ``error`` is the exception."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


class Executor:
    """Sends :class:`Command` s to one server past its circuit breaker, timed, counted and reported."""

    __slots__ = ("_connection", "_fold", "_pending", "_report", "breaker")

    def __init__(self, connection: AnyConnection, report: Reporter) -> None:
        self._connection = connection
        self._report = report
        self._pending = report.pending
        self._fold = report.fold
        #: The server's circuit breaker (read its state; only the executor asks it for permission).
        self.breaker = connection.breaker

    @property
    def connection(self) -> AnyConnection:
        return self._connection

    # -- the two shells: everything but the send is shared ----------------------------------------------------
    def attempt(self, command: Command, scope: Counters | None = None) -> Any:
        """The reply (a list for a command of several parts), or :class:`Failed`."""
        breaker = self.breaker
        if not breaker.clear and not breaker.allow():
            return self._skipped(command, scope)
        started = perf_counter()
        try:
            replies = self._connection.send(command)
            # NOSCRIPT is an error reply: one part answered without one (nearly always) needs no look.
            if command.scripted and (command.count > 1 or type(replies[0]) is NoScriptError):
                again = _noscript(command, replies)
                if again is not None:
                    _merge(replies, again, self._connection.send(again.command))
        except SERVER_ERRORS as exc:
            return self._failed(command, exc, scope, started)
        return self._settled(command, replies, scope, started)

    async def aattempt(self, command: Command, scope: Counters | None = None) -> Any:
        """Async :meth:`attempt`."""
        breaker = self.breaker
        if not breaker.clear and not breaker.allow():
            return self._skipped(command, scope)
        started = perf_counter()
        try:
            replies = await self._connection.asend(command)
            # NOSCRIPT is an error reply: one part answered without one (nearly always) needs no look.
            if command.scripted and (command.count > 1 or type(replies[0]) is NoScriptError):
                again = _noscript(command, replies)
                if again is not None:
                    _merge(replies, again, await self._connection.asend(again.command))
        except SERVER_ERRORS as exc:
            return self._failed(command, exc, scope, started)
        return self._settled(command, replies, scope, started)

    def _settled(self, command: Command, replies: list[Any], scope: Counters | None, started: float) -> Any:
        """What an answered ``command`` returns (its reply, or a list for several parts), its round trip queued
        for the report and the breaker told."""
        pending = self._pending
        pending.append((perf_counter() - started, scope))  # Reporter.roundtrip, inline: every command pays it
        if len(pending) > FOLD_AT:
            self._fold()
        breaker = self.breaker
        if not breaker.clear:
            breaker.success()
        reply = replies[0]
        if command.count == 1 and not isinstance(reply, ResponseError):  # nearly always
            return reply
        return self._answered(command, replies, scope)

    def run(self, command: Command, scope: Counters | None = None) -> Any:
        """The reply; a failure (already reported) is raised."""
        reply = self.attempt(command, scope)
        if type(reply) is Failed:
            raise reply.error
        return reply

    async def arun(self, command: Command, scope: Counters | None = None) -> Any:
        """Async :meth:`run`."""
        reply = await self.aattempt(command, scope)
        if type(reply) is Failed:
            raise reply.error
        return reply

    def stream(self, reply_timeout: float) -> Stream | ClusterStream:
        """A dedicated connection for a batch job (its replies read later, in order; see
        :class:`~cachewise.transport.stream.Stream`).  A batch job raises when the server fails rather than failing
        open, so the breaker is not asked: its caller must know that nothing was written."""
        connection = self._connection
        if isinstance(connection, ClusterConnection):
            return ClusterStream(connection)
        return Stream(connection.new_pool, connection.options.pool_kwargs(), reply_timeout)

    # -- shared steps (no I/O) ----------------------------------------------------------------------------------
    def _answered(self, command: Command, replies: list[Any], scope: Counters | None) -> Any:
        """The answer to a command of several parts, or one whose reply is an error."""
        if command.count == 1:
            reply = replies[0]
            if command.strict and isinstance(reply, ResponseError):
                return self._refused(command, reply, scope)
            return reply
        if command.strict:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    return self._refused(command, reply, scope)
        return replies

    def _refused(self, command: Command, reply: ResponseError, scope: Counters | None) -> Failed:
        """An error reply: an answer from a server that is up (no breaker failure), reported and handed back."""
        self._report.failure(command.name, reply, scope)
        return Failed(reply)

    def _failed(self, command: Command, exc: BaseException, scope: Counters | None, started: float) -> Failed:
        self._report.roundtrip(perf_counter() - started, scope)
        self._report.failure(command.name, exc, scope)
        return Failed(exc)

    def _skipped(self, command: Command, scope: Counters | None) -> Failed:
        exc = CircuitOpen(_CIRCUIT_OPEN)
        self._report.failure(command.name, exc, scope)
        return Failed(exc)


class _Again:
    """The parts of a command to send once more after ``NOSCRIPT``, behind the loads of their scripts (each load
    declares the keys of a part that runs it, so that a Cluster loads it on that part's node)."""

    __slots__ = ("command", "count", "indexes", "loads")

    def __init__(self, command: Command, indexes: list[int]) -> None:
        first: dict[Any, int] = {}
        for i in indexes:
            if command.scripts[i] is not None:
                first.setdefault(command.scripts[i], i)
        self.indexes = indexes
        self.loads = len(first)
        self.command = Command(
            command.name,
            [*(s.load for s in first), *(command.parts[i] for i in indexes)],
            [*(command.keys[i] for i in first.values()), *(command.keys[i] for i in indexes)],
            [*(None for _ in first), *(command.scripts[i] for i in indexes)],
            strict=False,
        )
        self.count = self.command.count


def _noscript(command: Command, replies: list[Any]) -> _Again | None:
    """The parts the server did not know the script of, or None (nearly always)."""
    if len(replies) == 1:
        return _Again(command, [0]) if isinstance(replies[0], NoScriptError) else None
    indexes = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    return _Again(command, indexes) if indexes else None


def _merge(replies: list[Any], again: _Again, retried: list[Any]) -> None:
    for i, reply in zip(again.indexes, retried[again.loads :], strict=True):
        replies[i] = reply
