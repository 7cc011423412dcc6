"""Counters of what the cache did, per namespace and per cached function.

Counting is pure bookkeeping (no I/O); :meth:`cachewise.Cache.stats` returns a snapshot.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local.tier import LocalStats

__all__ = ["CacheStats", "Counters", "StatsRegistry"]


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "breaker": self.breaker,
            "breaker_opens": self.breaker_opens,
            "total": self.total.as_dict(),
            "functions": {name: c.as_dict() for name, c in self.functions.items()},
            "local": None if self.local is None else asdict(self.local),
        }


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
        #: Hits answered by the local tier, not yet folded: the scope of each (None: the namespace alone).  The
        #: local tier's reads append to it and call :meth:`fold` past :data:`FOLD_AT` (a hit takes no lock).
        self.local_pending: collections.deque[Counters | None] = collections.deque()

    def scope(self, name: str | None) -> Counters | None:
        """The counters of a function (created on first use); None for the namespace alone."""
        if name is None:
            return None
        with self._lock:
            return self._functions.setdefault(name, Counters())

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

    def local_hit(self, scope: Counters | None) -> None:
        """One hit answered by the local tier (a hit, and a local hit), queued as the local tier's reads queue
        theirs (see :attr:`local_pending`)."""
        pending = self.local_pending
        pending.append(scope)
        if len(pending) > FOLD_AT:
            self.fold()

    def roundtrip(self, seconds: float, scope: Counters | None = None) -> None:
        """One server round trip of ``seconds``.  Every command pays this, so it takes no lock: it queues the round
        trip (``deque.append`` is atomic), and the queue is added to the counters under the lock when it grows long
        and before any read of them."""
        pending = self.pending
        pending.append((seconds, scope))
        if len(pending) > FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Add the queued round trips and local hits to the counters now."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """Add the queued round trips and local hits to the counters (the lock held; one queued meanwhile waits for the
        next fold: ``popleft`` never loses one)."""
        pending, total = self.pending, self._total
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
        hits = self.local_pending
        while hits:
            try:
                scope = hits.popleft()
            except IndexError:
                break
            total.hits += 1
            total.local_hits += 1
            if scope is not None:
                scope.hits += 1
                scope.local_hits += 1

    def snapshot(self) -> CacheStats:
        with self._lock:
            self._fold()
            return CacheStats(
                namespace=self.namespace,
                total=Counters(**asdict(self._total)),
                functions={n: Counters(**asdict(c)) for n, c in self._functions.items()},
            )

    def reset(self) -> None:
        """Zero every counter in place (cached functions keep their references to their counters)."""
        zero = Counters()
        with self._lock:
            self.pending.clear()
            self.local_pending.clear()
            for counters in (self._total, *self._functions.values()):
                for f in fields(Counters):
                    setattr(counters, f.name, getattr(zero, f.name))
