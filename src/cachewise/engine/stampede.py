"""Stampede policy, without I/O: who loads a cold key, when to refresh a hot one early, how long to wait.

* **Single flight with leases.**  On a miss one caller takes the key's lease (``acquire.lua``) and loads; the others
  wait to be told (a pub/sub message when the value is stored or the lease given back), then read it.  The holder
  stores its value only while its lease stands and no version or tag counter moved since it took it, so a delete,
  a write-through, a version bump or a tag invalidation during a slow load means its result is not stored (it was
  read before the write).  A lease expires after :meth:`LoadTimes.lease_ms` (derived from the loads observed), so
  a holder that dies is replaced; a waiter waits at most :attr:`Protection.max_wait` in all, then loads for itself
  (and does not store).
* **Early refresh** (XFetch: Vattani, Chierichetti & Lowenstein, VLDB 2015): a hit refreshes the entry before it
  expires with probability rising as expiry nears, ``now − Δ·β·ln(u) ≥ expiry`` (``Δ`` the load time, ``u`` uniform
  in (0, 1]), so a hot key is reloaded by one caller before it expires and nobody sees the miss.
* **Stale while revalidate**: an entry is kept ``stale_ttl`` past its TTL; a read in that window is served the old
  value while one caller (holding the lease) reloads it — in the background for async code.
* **Taking the lease with the read** when a miss is likely (:class:`MissOdds`): a miss then costs two round trips
  instead of three, and a hit that was guessed a miss pays a script instead of an ``MGET``
  (:mod:`cachewise.engine.firstread`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TypedDict

from ..errors import ConfigurationError
from ..uniques import token

__all__ = ["DEFAULT", "LoadTimes", "MissOdds", "Protection", "ProtectionOverrides", "new_token", "xfetch_due"]

#: Lease TTL before any load has been observed (seconds): long enough for a slow first load (a multi-second
#: dashboard query must not lose its lease and let every waiter run it too); a holder that dies on its first load
#: is replaced after this long.  Set ``lease_ttl=`` when loads can take longer.
INITIAL_LEASE = 10.0
MIN_LEASE = 0.5
MAX_LEASE = 60.0


@dataclass(frozen=True)
class Protection:
    """How a cache-aside read protects the origin.  The defaults are right for most uses."""

    #: One load per cold key across threads, tasks and processes (leases).  Off: every miss loads.
    single_flight: bool = True
    #: XFetch β: 1 is the paper's default; larger refreshes earlier; 0 turns early refresh off.
    early_refresh: float = 1.0
    #: Seconds an entry is kept past its TTL to be served stale while one caller reloads it (0: off).
    stale_ttl: float = 0.0
    #: Lease TTL in seconds; None: derived from the loads observed (3 × their average + 0.25 s, in [0.5, 60]; 10 s
    #: before the first load).  A running loader keeps its lease (it is extended every third of this); the TTL is
    #: how long a loader that died holds up the others.
    lease_ttl: float | None = None
    #: Longest a waiter waits for another caller's load before loading itself; None: 3 × the lease TTL.
    max_wait: float | None = None

    def __post_init__(self) -> None:
        for name in ("early_refresh", "stale_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("lease_ttl", "max_wait"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not 0 < value <= 3600):
                raise ConfigurationError(f"{name} must be None or seconds in (0, 3600], got {value!r}")

    def wait_budget(self, lease_ms: int) -> float:
        """Seconds a waiter may wait in all."""
        return self.max_wait if self.max_wait is not None else 3 * lease_ms / 1000


DEFAULT = Protection()


class ProtectionOverrides(TypedDict, total=False):
    """Per-call overrides of a :class:`Protection` (``cache.get_or_set(..., stale_ttl=30)``); None keeps the
    cache's."""

    #: One load per cold key across threads, tasks and processes (leases).
    single_flight: bool | None
    #: XFetch β (0: off).
    early_refresh: float | None
    #: Seconds to serve a stale value while one caller reloads it.
    stale_ttl: float | None
    #: Seconds before another caller takes over from a loader that died (a running loader keeps its lease).
    lease_ttl: float | None
    #: Seconds a caller waits for another's load before loading itself (default: 3 × the lease TTL).
    max_wait: float | None


#: How far before an entry's expiry, in units of ``beta × load time``, XFetch can fire at all in practice: it fires when
#: ``-ln(u) ≥ (expiry - now) / (beta × load)``, and ``-ln(u) ≥ 40`` has probability e^-40 ≈ 4e-18.  A read further
#: from expiry than that needs no draw (the local tier's hits skip it so).
XFETCH_HORIZON = 40.0


def xfetch_due(now_ms: float, written_ms: int, ttl_ms: int, load_ms: int, beta: float, u: float) -> bool:
    """Whether this read should refresh the entry early (``u`` uniform in (0, 1])."""
    if beta <= 0 or load_ms <= 0:
        return False
    return now_ms - load_ms * beta * math.log(u) >= written_ms + ttl_ms


class LoadTimes:
    """Observed load durations (an exponentially weighted average) and the lease TTL they call for."""

    def __init__(self, weight: float = 0.3) -> None:
        self.weight = weight
        self.average: float | None = None
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            avg = self.average
            self.average = seconds if avg is None else avg + self.weight * (seconds - avg)

    def lease_ms(self, configured: float | None = None) -> int:
        """The lease TTL for the next load, in ms."""
        if configured is not None:
            return max(1, int(configured * 1000))
        avg = self.average
        seconds = INITIAL_LEASE if avg is None else min(MAX_LEASE, max(MIN_LEASE, 3 * avg + 0.25))
        return int(seconds * 1000)


#: The weight of the newest read in the share of misses (about the last 16 reads count).
_WEIGHT = 1 / 16
#: The share of misses from which a cache-aside read takes the lease with its read.
LIKELY = 1 / 8
_GROUPS = 4096
#: A share of misses below this is taken as none (the hit path then skips the arithmetic).
_FLOOR = 1 / 1024


class MissOdds:
    """How likely the next cache-aside read of a version group is to miss: an exponentially weighted share of
    misses among its recent reads.  A group not seen yet takes the share of all the cache's reads.  Updated without a
    lock: two threads racing on one group lose an observation, which only blurs a guess.

    When the cache-wide share falls below :data:`_FLOOR` (the cache has stopped missing), every group's share is
    forgotten and :attr:`quiet` is True: no read is then likely to miss and a hit changes nothing, so the hit path
    skips both questions.
    """

    __slots__ = ("_all", "_groups", "quiet")

    def __init__(self) -> None:
        self._all = 0.0
        self._groups: dict[str, float] = {}
        #: No read missed lately: :meth:`likely` is False for every group, and :meth:`observe` of a hit a no-op.
        self.quiet = True

    def likely(self, group: str) -> bool:
        """Whether a read of ``group`` had better take the lease with it."""
        share = self._groups.get(group)
        return (self._all if share is None else share) >= LIKELY

    def observe(self, group: str, missed: bool) -> None:
        """A cache-aside read of ``group`` hit (``missed`` False) or missed.  A share that falls below
        :data:`_FLOOR` is 0."""
        if not missed and self.quiet:
            return
        groups = self._groups
        share = groups.get(group)
        seen = 1.0 if missed else 0.0
        total = self._all + (seen - self._all) * _WEIGHT
        if total < _FLOOR:  # the cache has stopped missing: forget every group's share
            self._all, self.quiet = 0.0, True
            groups.clear()
            return
        self._all, self.quiet = total, False
        if share is None:
            if len(groups) >= _GROUPS:
                groups.clear()
            share = total
        share += (seen - share) * _WEIGHT
        groups[group] = share if share >= _FLOOR else 0.0


def new_token() -> str:
    """A lease token: 64 random bits (:mod:`cachewise.uniques`), so that no other caller completes or releases our
    lease."""
    return token()
