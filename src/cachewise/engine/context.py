"""What the read-through flows know of their cache, without I/O: its keys, how it reads and writes entries, how long
its loads take, and where it counts.

A :class:`Context` is built without a server, so the flows (:mod:`cachewise.engine.flows`) run against it in tests
with scripted replies; the :class:`~cachewise.engine.engine.Engine` adds the I/O (executor, waiters, leases kept
alive, local flights).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from ..keyspace import KeySpace
from ..local.tier import LocalTier
from ..report import Reporter
from ..stats import Counters, StatsRegistry
from ..ttl import TTLLike
from .reads import EntryReader, ReadPlan
from .stampede import LoadTimes, MissOdds, Protection
from .writes import EntryWriter

__all__ = ["Context", "Request", "Site"]

_PLAN_MEMO_SIZE = 4096


class Site:
    """Where cache-aside calls come from (a decorated function, or one ``get_or_set`` call): how they store and how
    they protect the origin, whatever the key.  A decorated function builds its site once, so that a hit builds
    nothing; the :class:`Request` of one call is built only when a flow needs it (:meth:`request`).  Never changed
    once built (not a frozen dataclass: ``get_or_set`` builds one per call, and a frozen one takes five times as long
    to build)."""

    __slots__ = ("background", "jitter", "local", "protection", "scope", "ttl", "where")

    def __init__(
        self,
        ttl: TTLLike | None,
        jitter: float | None,
        scope: Counters | None,
        where: str,
        protection: Protection,
        background: bool = False,
        local: bool = True,
    ) -> None:
        self.ttl = ttl
        self.jitter = jitter
        self.scope = scope
        self.where = where
        self.protection = protection
        #: Refresh in the background (async code) rather than in the caller.
        self.background = background
        #: Use the cache's local tier, when it has one (``@cache.cached(local=False)`` opts out).
        self.local = local

    def request(self, key: str, tokens: tuple[str, ...]) -> Request:
        """The request of one call from here, for ``key`` with tag tokens ``tokens``."""
        return Request(key, tokens, self.ttl, self.jitter, self.scope, self.where, self.protection, self.background)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r}, ttl={self.ttl!r}, protection={self.protection!r})"


class Request(Site):
    """One cache-aside call: its key and tags' tokens, and its :class:`Site` 's settings."""

    __slots__ = ("key", "tokens")

    def __init__(
        self,
        key: str,
        tokens: tuple[str, ...],
        ttl: TTLLike | None,
        jitter: float | None,
        scope: Counters | None,
        where: str,
        protection: Protection,
        background: bool = False,
    ) -> None:
        super().__init__(ttl, jitter, scope, where, protection, background)
        self.key = key
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"Request({self.key!r}, tokens={self.tokens!r}, where={self.where!r})"


class Context:
    """The pure side of one cache's read-through machinery."""

    def __init__(
        self,
        space: KeySpace,
        reader: EntryReader,
        writer: EntryWriter,
        stats: StatsRegistry,
        report: Reporter,
        protection: Protection,
    ) -> None:
        self.space = space
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self.report = report
        self.protection = protection
        #: The process-local tier, when the cache has one: writes and invalidations of this process drop what it
        #: holds before they return (:mod:`cachewise.engine.ops`).
        self.local: LocalTier | None = None
        #: How likely a cache-aside read of a group is to miss (:mod:`cachewise.engine.firstread` decides by it).
        self.odds = MissOdds()
        self._plans: dict[str | tuple[str, tuple[str, ...]], ReadPlan] = {}
        self._load_times: dict[str | None, LoadTimes] = {}
        self._protections: dict[tuple[Protection, tuple[tuple[str, Any], ...]], Protection] = {}
        self._lock = threading.Lock()

    def read_plan(self, key: str, tokens: tuple[str, ...] = ()) -> ReadPlan:
        """What one read of ``key`` fetches (memoised: building it is most of a hit's own cost)."""
        memo_key = (key, tokens) if tokens else key
        plan = self._plans.get(memo_key)
        if plan is None:
            plan = ReadPlan(self.space, key, tokens)
            if len(self._plans) >= _PLAN_MEMO_SIZE:
                self._plans.clear()
            self._plans[memo_key] = plan
        return plan

    def forget(self, keys: list[str]) -> None:
        """Server keys this process just changed: the local tier drops what was judged with them."""
        if self.local is not None:
            self.local.invalidate(keys)

    def lease_ms(self, site: Site) -> int:
        """The lease TTL for a load of a call from ``site`` (configured, or derived from its loads so far)."""
        times = self._load_times.get(site.where)
        return (times or LoadTimes()).lease_ms(site.protection.lease_ttl)

    def loaded(self, req: Request, seconds: float, *, leased: bool) -> None:
        """A load of ``req`` took ``seconds``."""
        self.stats.loaded(req.scope, seconds)
        if leased:
            self.stats.add(req.scope, "leases")
        times = self._load_times.get(req.where)
        if times is None:
            with self._lock:
                times = self._load_times.setdefault(req.where, LoadTimes())
        times.observe(seconds)

    def protection_with(self, base: Protection | None, overrides: dict[str, Any]) -> Protection:
        """``base`` (default: the cache's) with the given overrides (validated once per distinct override)."""
        chosen = base or self.protection
        given = tuple((k, v) for k, v in overrides.items() if v is not None)
        if not given:
            return chosen
        memo_key = (chosen, given)
        found = self._protections.get(memo_key)
        if found is None:
            found = self._protections[memo_key] = dataclasses.replace(chosen, **dict(given))
        return found
