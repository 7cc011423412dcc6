"""How the engine's reads use the local tier (:mod:`cachewise.local`), without I/O: look up, count, and store what
a read of the server found.

A lookup gives the tier's key (the read plan's: the user key, with its tag tokens when there are any), what the tier
holds for it, and a ticket taken *before* the server is read; :meth:`LocalReads.remember` stores a fresh hit under
that ticket, for as long as the entry's header says it stays fresh on the server.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any

from ..entries import verdicts
from ..local.tier import LocalTier
from ..local.tracking import Tracker
from ..stats import Counters, StatsRegistry

__all__ = ["LocalReads"]


class LocalReads:
    """The local tier of one cache as its reads see it."""

    __slots__ = ("stats", "tier", "tracker")

    def __init__(self, tier: LocalTier, tracker: Tracker, stats: StatsRegistry) -> None:
        self.tier = tier
        self.tracker = tracker
        self.stats = stats

    def lookup(self, key: str, tokens: tuple[str, ...]) -> tuple[Hashable, Any, int]:
        """``(the tier's key, what it holds or None, a ticket for a fill)``."""
        tier = self.tier
        lkey = (key, tokens) if tokens else key
        return lkey, tier.get(lkey), tier.ticket()

    def served(self, scope: Counters | None) -> None:
        self.stats.local_hit(scope)

    def remember(self, lkey: Hashable, found: Any, ticket: int, scope: Counters | None) -> None:
        """Store a fresh hit the server answered (counted as a local miss); a read that failed, missed or holds no
        readable times stores nothing."""
        self.stats.add(scope, "local_misses")
        tracker = self.tracker
        if not tracker.started():  # the first read of this process (or of a forked child)
            tracker.start()
            return
        head, reply = found[1], found[3]
        if not head or not reply:
            return
        times = verdicts.times(head)
        if times is None:
            return
        written, ttl, _, _ = times
        left = (written + ttl) / 1000 - time.time()
        self.tier.fill(lkey, (*found[:3], None), found[2].keys, ticket, left, len(reply[0]))

    def missed(self, scope: Counters | None) -> None:
        self.stats.add(scope, "local_misses")
