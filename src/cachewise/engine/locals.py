"""How the engine's reads use the local tier (:mod:`cachewise.local`), without I/O: look up, count, and store what
a read of the server found.

:meth:`LocalReads.lookup` looks the tier up by the read plan's key (the user key, with its tag tokens when there are
any) and, on a miss, hands out a ticket (``tier.seq``) taken *before* the server is read;
:meth:`LocalReads.remember` stores a fresh hit under that ticket, for as long as the entry's header says it stays
fresh on the server.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from ..entries import verdicts
from ..local.tier import LocalTier
from ..local.tracking import Tracker
from ..stats import FOLD_AT, Counters, StatsRegistry
from .reads import EntryReader
from .stampede import Protection

__all__ = ["LocalReads"]


class LocalReads:
    """The local tier of one cache as its reads see it."""

    __slots__ = ("_get", "_hits", "_refresh_due", "stats", "tier", "tracker")

    def __init__(self, tier: LocalTier, tracker: Tracker, stats: StatsRegistry, reader: EntryReader) -> None:
        self.tier = tier
        self.tracker = tracker
        self.stats = stats
        self._get = tier.get
        self._hits = stats.local_pending
        self._refresh_due = reader.refresh_due

    def lookup(
        self, key: str, tokens: tuple[str, ...], scope: Counters | None, protection: Protection | None = None
    ) -> Any:
        """A local hit for the read of ``key`` with tag ``tokens`` (the stored ``Found``, counted), or on a miss the
        ticket under which the server's answer may fill the tier (:meth:`remember`).  With ``protection`` (a
        cache-aside call), a hit whose header says it is due for a refresh is a miss: it refreshes as a server
        hit would, and the miss odds stay the server reads' own.  The ticket is taken before the server is read, so
        an invalidation at any point after it refuses the fill."""
        found = self._get((key, tokens) if tokens else key)
        if found is not None and (protection is None or self._refresh_due(found[1], protection) is None):
            hits = self._hits  # StatsRegistry.local_hit, inline: every local hit pays it
            hits.append(scope)
            if len(hits) > FOLD_AT:
                self.stats.fold()
            return found
        return self.tier.seq

    def remember(self, key: str, tokens: tuple[str, ...], found: Any, ticket: int, scope: Counters | None) -> Any:
        """Store ``found``, a fresh hit the server answered, under ``ticket`` (counted as a local miss); a read that
        failed, missed or holds no readable times stores nothing.  Returns ``found``."""
        self.stats.add(scope, "local_misses")
        tracker = self.tracker
        if not tracker.started():  # the first read of this process (or of a forked child)
            tracker.start()
            return found
        head, reply = found[1], found[3]
        if not head or not reply:
            return found
        times = verdicts.times(head)
        if times is None:
            return found
        written, ttl, _, _ = times
        left = (written + ttl) / 1000 - time.time()
        lkey: Hashable = (key, tokens) if tokens else key
        self.tier.fill(lkey, (*found[:3], None), found[2].keys, ticket, left, len(reply[0]))
        return found

    def missed(self, scope: Counters | None) -> None:
        self.stats.add(scope, "local_misses")
