"""Counters of what the cache did, per namespace and per cached function.

Counting is pure bookkeeping (no I/O); :meth:`cachewise.Cache.stats` returns a snapshot.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local.tier import LocalStats

__all__ = ["CacheStats", "Counters", "Durations", "StatsRegistry"]


@dataclass
class Counters:
    """What happened in one scope (a namespace, or one cached function)."""

    hits: int = 0
    misses: int = 0
    #: Values under our key that were not a cachewise entry we can read (foreign, corrupt, other serializer).
    invalid: int = 0
    sets: int = 0
    deletes: int = 0
    #: Server errors (the operation failed open: a read became a miss, a write was skipped).
    errors: int = 0
    #: Calls that skipped the server because its circuit breaker was open (~0 ms each instead of a timeout).
    skipped: int = 0
    #: Values not stored because they were larger than ``max_value_bytes`` (the caller still got them).
    oversize: int = 0
    #: Values whose signature did not verify (tampered with, or signed with another key): misses, never decoded.
    tampered: int = 0
    loads: int = 0
    load_seconds: float = 0.0
    #: Loads made while holding the key's lease (the one load of a cold key, across every process).
    leases: int = 0
    #: Reads that waited for another caller's load instead of loading.
    waits: int = 0
    #: Waiters that gave up waiting (the holder died or hung) and loaded for themselves.
    wait_timeouts: int = 0
    #: Hits that refreshed the entry before it expired (XFetch).
    early_refreshes: int = 0
    #: Reads served a stale value while another caller reloaded it (stale-while-revalidate).
    stale_served: int = 0
    #: Loaded values not stored because an invalidation or a write came during the load (they may be stale).
    refused_writes: int = 0
    roundtrips: int = 0
    roundtrip_seconds: float = 0.0
    #: Hits answered by the local tier (counted in ``hits`` too), and reads it could not answer.
    local_hits: int = 0
    local_misses: int = 0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    @property
    def mean_load_ms(self) -> float:
        return 1000 * self.load_seconds / self.loads if self.loads else 0.0

    @property
    def mean_roundtrip_ms(self) -> float:
        return 1000 * self.roundtrip_seconds / self.roundtrips if self.roundtrips else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(hit_ratio=self.hit_ratio, mean_load_ms=self.mean_load_ms, mean_roundtrip_ms=self.mean_roundtrip_ms)
        return out


@dataclass(frozen=True)
class CacheStats:
    """A snapshot: the namespace's totals and one :class:`Counters` per cached function."""

    namespace: str
    total: Counters
    functions: dict[str, Counters] = field(default_factory=dict)
    #: The server's circuit breaker: "closed", "open" or "half-open".
    breaker: str = "closed"
    #: Times the breaker opened.
    breaker_opens: int = 0
    #: The local tier (``Cache(local=...)``): its size and what it did; None when it is off.
    local: LocalStats | None = None
    #: Rate-limit decisions by limiter name: ``{"allowed": n, "refused": m}`` (limiters built on this cache).
    limits: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "breaker": self.breaker,
            "breaker_opens": self.breaker_opens,
            "total": self.total.as_dict(),
            "functions": {name: c.as_dict() for name, c in self.functions.items()},
            "local": None if self.local is None else asdict(self.local),
            "limits": {name: dict(counts) for name, counts in self.limits.items()},
        }


@dataclass(frozen=True)
class Durations:
    """Bucketed durations (loads, server commands) by scope, once :meth:`StatsRegistry.track_durations` is on.

    ``bounds``: the buckets' upper bounds in seconds, ascending; ``counts[kind][scope]``: how many durations fell
    in each bucket (not cumulative; one more than ``bounds``: above the last bound), ``scope`` a function's name or
    None (the namespace's own calls)."""

    bounds: tuple[float, ...]
    counts: dict[str, dict[str | None, tuple[int, ...]]]
    #: The durations' sums in seconds, by kind and scope as ``counts``.
    sums: dict[str, dict[str | None, float]]


_FIELDS = frozenset(f.name for f in fields(Counters))
#: Round trips recorded but not yet added to the counters (see :meth:`StatsRegistry.roundtrip`).
FOLD_AT = 4096


class StatsRegistry:
    """Thread-safe counters for a namespace and its functions."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._total = Counters()
        self._functions: dict[str, Counters] = {}
        self._lock = threading.Lock()
        #: Round trips not yet folded into the counters: ``(seconds, scope)``.  The executor appends to it itself
        #: and calls :meth:`fold` past :data:`FOLD_AT` (what :meth:`roundtrip` does, without its call).
        self.pending: collections.deque[tuple[float, Counters | None]] = collections.deque()
        #: Hits answered by the local tier, by scope (``id(counters)``; None: the namespace's own calls): an
        #: ``itertools.count`` each, advanced by the recorder :meth:`local_recorder` hands out (a hit takes no lock
        #: and leaves nothing to fold), with the scope and the count at the last :meth:`reset`.
        self._local: dict[int | None, tuple[itertools.count[int], Counters | None, list[int]]] = {}
        #: Rate-limit decisions not yet folded: ``(limiter name, allowed)`` (see :meth:`decided`).
        self.decisions: collections.deque[tuple[str, bool]] = collections.deque()
        self._decided: dict[str, dict[str, int]] = {}
        self._names: dict[int, str] = {}  # id(function counters) -> name, for the duration buckets
        self._bounds: tuple[float, ...] | None = None
        self._buckets: dict[str, dict[str | None, list[int]]] = {"load": {}, "command": {}}
        self._sums: dict[str, dict[str | None, float]] = {"load": {}, "command": {}}

    def scope(self, name: str | None) -> Counters | None:
        """The counters of a function (created on first use); None for the namespace alone."""
        if name is None:
            return None
        with self._lock:
            counters = self._functions.setdefault(name, Counters())
            self._names[id(counters)] = name
            return counters

    def add(self, scope: Counters | None, name: str, amount: float = 1) -> None:
        """Add ``amount`` to counter ``name`` of the namespace, and of ``scope`` when given."""
        with self._lock:
            setattr(self._total, name, getattr(self._total, name) + amount)
            if scope is not None:
                setattr(scope, name, getattr(scope, name) + amount)

    def hit(self, scope: Counters | None) -> None:
        """One hit (:meth:`add` of ``"hits"``, without looking the counter up by name: every hit pays this)."""
        with self._lock:
            self._total.hits += 1
            if scope is not None:
                scope.hits += 1

    def loaded(self, scope: Counters | None, seconds: float) -> None:
        """One load of ``seconds`` (``loads``, ``load_seconds`` and, when tracked, its duration bucket)."""
        with self._lock:
            for counters in (self._total, scope) if scope is not None else (self._total,):
                counters.loads += 1
                counters.load_seconds += seconds
            if self._bounds is not None:
                self._bucket("load", scope, seconds)

    def decided(self, limiter: str, allowed: bool) -> None:
        """One rate-limit decision of ``limiter`` (queued like round trips: the limiter appends to
        :attr:`decisions` itself)."""
        decisions = self.decisions
        decisions.append((limiter, allowed))
        if len(decisions) > FOLD_AT:
            self.fold()

    def track_durations(self, bounds: Sequence[float]) -> None:
        """Count loads and server commands in buckets of these upper bounds (seconds) from now on, for histograms
        (:meth:`durations`); off by default: a command then pays nothing for it."""
        ordered = tuple(sorted(float(b) for b in bounds))
        if not ordered or ordered[0] <= 0:
            raise ValueError(f"duration buckets must be positive seconds, got {tuple(bounds)!r}")
        with self._lock:
            if self._bounds is not None and self._bounds != ordered:
                raise ValueError(f"durations are tracked with the buckets {self._bounds!r} already")
            self._bounds = ordered

    def durations(self) -> Durations | None:
        """The duration buckets so far (None: not tracked, see :meth:`track_durations`)."""
        with self._lock:
            self._fold()
            if self._bounds is None:
                return None
            counts = {kind: {n: tuple(c) for n, c in by.items()} for kind, by in self._buckets.items()}
            return Durations(self._bounds, counts, {kind: dict(by) for kind, by in self._sums.items()})

    def _bucket(self, kind: str, scope: Counters | None, seconds: float) -> None:
        """Count ``seconds`` in its bucket (the lock held, durations tracked)."""
        bounds = self._bounds
        assert bounds is not None
        name = None if scope is None else self._names.get(id(scope))
        by = self._buckets[kind]
        counts = by.get(name)
        if counts is None:
            counts = by[name] = [0] * (len(bounds) + 1)
        counts[bisect.bisect_left(bounds, seconds)] += 1
        sums = self._sums[kind]
        sums[name] = sums.get(name, 0.0) + seconds

    def local_recorder(self, scope: Counters | None) -> Callable[[], int]:
        """What records one hit answered by the local tier in ``scope`` (a hit, and a local hit): call it with no
        argument.  It is ``next`` of a counter: atomic, no lock."""
        key = None if scope is None else id(scope)
        with self._lock:
            entry = self._local.get(key)
            if entry is None:
                entry = self._local[key] = (itertools.count(), scope, [0])
        return entry[0].__next__

    def local_hit(self, scope: Counters | None) -> None:
        """One hit answered by the local tier (see :meth:`local_recorder`)."""
        self.local_recorder(scope)()

    def roundtrip(self, seconds: float, scope: Counters | None = None) -> None:
        """One server round trip of ``seconds``.  Every command pays this, so it takes no lock: it queues the round
        trip (``deque.append`` is atomic), and the queue is added to the counters under the lock when it grows long
        and before any read of them."""
        pending = self.pending
        pending.append((seconds, scope))
        if len(pending) > FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Add the queued round trips and decisions to the counters now."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """Add the queued round trips and decisions to the counters (the lock held; one queued meanwhile waits for the
        next fold: ``popleft`` never loses one)."""
        pending, total, tracked = self.pending, self._total, self._bounds is not None
        while pending:
            try:
                seconds, scope = pending.popleft()
            except IndexError:
                break
            total.roundtrips += 1
            total.roundtrip_seconds += seconds
            if scope is not None:
                scope.roundtrips += 1
                scope.roundtrip_seconds += seconds
            if tracked:
                self._bucket("command", scope, seconds)
        decisions = self.decisions
        while decisions:
            try:
                limiter, allowed = decisions.popleft()
            except IndexError:
                break
            counts = self._decided.get(limiter)
            if counts is None:
                counts = self._decided[limiter] = {"allowed": 0, "refused": 0}
            counts["allowed" if allowed else "refused"] += 1

    def snapshot(self) -> CacheStats:
        with self._lock:
            self._fold()
            total = Counters(**asdict(self._total))
            functions = {n: Counters(**asdict(c)) for n, c in self._functions.items()}
            names = {id(c): n for n, c in self._functions.items()}
            for key, (count, _, base) in self._local.items():
                hits = _value(count) - base[0]
                for counters in (total, None if key is None else functions.get(names.get(key, ""))):
                    if counters is not None:
                        counters.hits += hits
                        counters.local_hits += hits
            return CacheStats(
                namespace=self.namespace,
                total=total,
                functions=functions,
                limits={name: dict(counts) for name, counts in self._decided.items()},
            )

    def reset(self) -> None:
        """Zero every counter in place (cached functions keep their references to their counters)."""
        zero = Counters()
        with self._lock:
            self.pending.clear()
            for count, _, base in self._local.values():
                base[0] = _value(count)
            self.decisions.clear()
            self._decided.clear()
            self._buckets = {kind: {} for kind in self._buckets}
            self._sums = {kind: {} for kind in self._sums}
            for counters in (self._total, *self._functions.values()):
                for f in fields(Counters):
                    setattr(counters, f.name, getattr(zero, f.name))


def _value(count: itertools.count[int]) -> int:
    """How many times ``next`` was called on ``count`` (started at 0): its repr is ``count(n)``."""
    return int(repr(count)[6:-1])
