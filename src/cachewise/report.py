"""What a component built on a :class:`~cachewise.Cache` reports through it: the extension API.

The rate limiter, the session store and the feature store (and anything you build on a cache) count their work in
the cache's :meth:`~cachewise.Cache.stats` and report server failures the way the cache does: counted, logged at
most once per interval per kind, and told to the circuit breaker when they mean the server is down.  They reach
all of that through ``cache.report``, never through the cache's private members.
"""

from __future__ import annotations

import logging

from .breaker import CircuitBreaker
from .failures import OUTAGE_ERRORS, CircuitOpen, ErrorLog
from .stats import Counters, StatsRegistry

__all__ = ["Reporter"]


class Reporter:
    """Counters, failures and warnings of one cache, for the components built on it."""

    __slots__ = ("_breaker", "_errors", "_stats", "decisions", "fold", "pending", "roundtrip")

    def __init__(self, stats: StatsRegistry, errors: ErrorLog, breaker: CircuitBreaker) -> None:
        self._stats = stats
        self._errors = errors
        self._breaker = breaker
        #: ``roundtrip(seconds, scope=None)``: one server round trip of ``seconds`` (the registry's own method:
        #: every command calls it).
        self.roundtrip = stats.roundtrip
        #: :meth:`roundtrip` in two parts, for the executor (every command pays it): append ``(seconds, scope)`` to
        #: ``pending``, and call ``fold()`` once it is longer than :data:`~cachewise.stats.FOLD_AT`.
        self.pending = stats.pending
        self.fold = stats.fold
        #: Rate-limit decisions, queued: append ``(limiter name, allowed)`` and call ``fold()`` past
        #: :data:`~cachewise.stats.FOLD_AT` (:meth:`~cachewise.stats.StatsRegistry.decided`, inline).
        self.decisions = stats.decisions

    @property
    def registry(self) -> StatsRegistry:
        """The counters themselves (for exporters: :mod:`cachewise.metrics`)."""
        return self._stats

    def scope(self, name: str) -> Counters | None:
        """The counters of one component or function (``stats().functions[name]``), created on first use."""
        return self._stats.scope(name)

    def count(self, name: str, scope: Counters | None = None, amount: float = 1) -> None:
        """Add ``amount`` to counter ``name`` (a field of :class:`~cachewise.stats.Counters`) of the cache, and of
        ``scope`` when given."""
        self._stats.add(scope, name, amount)

    def failure(self, operation: str, exc: BaseException, scope: Counters | None = None) -> None:
        """A server call failed and the caller carries on (fails open): counted as ``errors`` (``skipped`` when the
        breaker was open), logged (rate-limited), and told to the breaker when it means the server is down."""
        if isinstance(exc, CircuitOpen):
            self._stats.add(scope, "skipped")
            return
        self._stats.add(scope, "errors")
        self._errors.error(operation, exc)
        if isinstance(exc, OUTAGE_ERRORS):
            self._breaker.failure()

    def warn(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` unless one of the same ``kind`` was logged within the log interval."""
        self._errors.log(kind, message, level)
