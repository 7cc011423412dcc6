"""The process-local tier (L1), without I/O: values this process read from the server, kept until the server says
they changed.

An entry is stored with the server keys it was judged with (the entry and the counters it is stamped with: see
:class:`~cachewise.engine.reads.ReadPlan`); an invalidation of any of them (:meth:`LocalTier.invalidate`, fed by
:mod:`cachewise.local.tracking`) drops it.  Three rules keep it coherent:

* **Fills that raced an invalidation lose.**  A reader takes a ticket (:attr:`LocalTier.seq`) before it sends the
  read, and :meth:`fill` refuses the value when one of its keys was invalidated after the ticket (the "caching in
  progress" placeholder of the Redis client-side caching documentation): a read answered with the old value, whose
  invalidation was handled before the reply, never enters the tier.
* **Hits need a live link.**  A hit is served only while :attr:`trusted_until` is ahead: the tracker moves it to
  ``max_lag`` seconds after it *sent* the last ``PING`` answered on every invalidation link.  Replies come in order,
  so every invalidation of a write made before that ``PING`` was handled first: a value served is never older than
  ``max_lag`` behind the server, even when the link stalls silently.
* **A lost link empties the tier.**  Invalidations may have been lost: :meth:`lost` drops everything, refuses every
  fill in flight and serves nothing until the link is heard again.

Values are stored decoded and handed out as they are: a caller must not mutate what it gets (as with
``functools.lru_cache``).  Eviction is LRU by count (``maxsize``) and, when given, by the size of the entries' stored
bytes (``max_bytes``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Any

__all__ = ["LocalEntry", "LocalStats", "LocalTier"]

#: Invalidated keys remembered for tickets in flight; past this many, every older ticket is refused at once.
_TOUCHED_MAX = 65_536


@dataclass(frozen=True)
class LocalStats:
    """What the local tier did (see :meth:`cachewise.Cache.stats`; hits and misses are counted per function)."""

    entries: int
    bytes: int
    evictions: int
    #: Entries dropped because the server said one of their keys changed.
    invalidations: int
    #: Times the whole tier was emptied (a lost link, a ``FLUSHDB``, ``clear()``, a fork).
    flushes: int
    #: Times the tier served again after a flush for a lost link.
    resumes: int
    #: Whether the tier serves hits now (every invalidation link heard within ``max_lag``).
    coherent: bool


class LocalEntry:
    """One stored value: what the read found, when it expires (``monotonic()``), its size and its server keys."""

    __slots__ = ("expires", "found", "keys", "size")

    def __init__(self, found: Any, expires: float, size: int, keys: tuple[str, ...]) -> None:
        self.found = found
        self.expires = expires
        self.size = size
        self.keys = keys


class LocalTier:
    """The L1 of one cache: LRU, bounded, coherent with the server through the invalidations it is fed."""

    def __init__(self, maxsize: int, max_bytes: int | None, ttl: float | None, max_lag: float) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.max_lag = max_lag
        self._entries: OrderedDict[Hashable, LocalEntry] = OrderedDict()
        self._by_key: dict[str, set[Hashable]] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._floor = 0  # tickets below it are refused (a flush happened after they were taken)
        self._touched: dict[str, int] = {}
        self._heard: dict[str, float] = {}
        self._links: frozenset[str] = frozenset()
        #: Hits are served while ``monotonic()`` is below this (see the module's docstring).
        self.trusted_until = 0.0
        self._bytes = 0
        self._lapsed = True
        self.evictions = 0
        self.invalidations = 0
        self.flushes = 0
        self.resumes = 0

    # -- the read path ----------------------------------------------------------------------------------------------
    def get(self, key: Hashable) -> Any:
        """What a read of ``key`` found (the stored :data:`~cachewise.engine.flows.Found`), or None: not here,
        expired, or the tier is not coherent now."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = monotonic()
        if now >= entry.expires or now >= self.trusted_until:
            return None
        try:  # noqa: SIM105 (suppress() costs a hit ~0.3 µs)
            self._entries.move_to_end(key)
        except KeyError:  # dropped meanwhile by the tracker's thread: this hit still saw it valid
            pass
        return entry.found

    @property
    def seq(self) -> int:
        """The ticket of a read whose value may be stored, taken before it is sent: :meth:`fill` refuses the value
        if one of its keys was invalidated meanwhile."""
        return self._seq

    def fill(self, key: Hashable, found: Any, keys: tuple[str, ...], ticket: int, expires_in: float, size: int) -> bool:
        """Store what a read found for ``key`` (judged with the server keys ``keys``) for at most ``expires_in``
        seconds (capped by the tier's ``ttl``), unless an invalidation or a flush came after ``ticket`` or the tier
        is not coherent; whether it was stored."""
        if expires_in <= 0 or (self.max_bytes is not None and size > self.max_bytes):
            return False
        if self.ttl is not None:
            expires_in = min(expires_in, self.ttl)
        with self._lock:
            now = monotonic()
            if ticket < self._floor or now >= self.trusted_until:
                return False
            touched = self._touched
            for name in keys:
                if touched.get(name, -1) > ticket:
                    return False
            self._drop(key)
            self._entries[key] = LocalEntry(found, now + expires_in, size, keys)
            self._bytes += size
            for name in keys:
                self._by_key.setdefault(name, set()).add(key)
            while len(self._entries) > self.maxsize or (self.max_bytes is not None and self._bytes > self.max_bytes):
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.evictions += 1
        return True

    # -- what the server (or this process's own writes) said --------------------------------------------------------
    def invalidate(self, names: Iterable[str]) -> int:
        """Server keys that changed: drop every entry judged with one of them, and refuse the fills in flight that
        read one; how many entries were dropped."""
        dropped = 0
        with self._lock:
            self._seq += 1
            seq, touched = self._seq, self._touched
            for name in names:
                touched[name] = seq
                for key in self._by_key.pop(name, ()):
                    dropped += self._drop(key)
            if len(touched) > _TOUCHED_MAX:
                touched.clear()
                self._floor = seq + 1
                self._seq = seq + 1
            self.invalidations += dropped
        return dropped

    def flush(self) -> None:
        """Drop everything and refuse every fill in flight (``FLUSHDB``, ``clear()``, a fork)."""
        with self._lock:
            self._flush()

    def lost(self, link: str) -> None:
        """The invalidation link ``link`` dropped: invalidations may be lost, so flush, and serve nothing until
        every link is heard again."""
        with self._lock:
            self._heard.pop(link, None)
            self.trusted_until = 0.0
            self._flush()
            self._lapsed = True

    def links(self, names: Iterable[str]) -> None:
        """The invalidation links the tier depends on (one per server, or per Cluster primary)."""
        with self._lock:
            self._links = frozenset(names)
            self._heard = {k: v for k, v in self._heard.items() if k in self._links}
            self._trust()

    def heard(self, link: str, sent_at: float) -> None:
        """``link`` answered a ``PING`` sent at ``sent_at`` (``monotonic()``): every invalidation before it was
        handled."""
        with self._lock:
            if sent_at > self._heard.get(link, -1.0):
                self._heard[link] = sent_at
                self._trust()

    def _trust(self) -> None:
        if not self._links or any(link not in self._heard for link in self._links):
            self.trusted_until = 0.0
            return
        self.trusted_until = min(self._heard[link] for link in self._links) + self.max_lag
        if self._lapsed:
            self._lapsed = False
            self.resumes += 1

    def reset(self) -> None:
        """A forked child: empty, and not coherent until its own tracker is heard."""
        self._lock = threading.Lock()
        self._entries.clear()
        self._by_key.clear()
        self._touched.clear()
        self._heard.clear()
        self._bytes = 0
        self.trusted_until = 0.0
        self._floor = self._seq = self._seq + 1
        self._lapsed = True

    # -- inside the lock ---------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._entries.clear()
        self._by_key.clear()
        self._touched.clear()
        self._bytes = 0
        self._seq += 1
        self._floor = self._seq + 1
        self._seq = self._floor
        self.flushes += 1

    def _drop(self, key: Hashable) -> int:
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        self._bytes -= entry.size
        for name in entry.keys:
            owners = self._by_key.get(name)
            if owners is not None:
                owners.discard(key)
                if not owners:
                    del self._by_key[name]
        return 1

    def stats(self) -> LocalStats:
        return LocalStats(
            len(self._entries),
            self._bytes,
            self.evictions,
            self.invalidations,
            self.flushes,
            self.resumes,
            monotonic() < self.trusted_until,
        )
