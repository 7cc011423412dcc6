"""How the engine's reads use the local tier (:mod:`cachewise.local`), without I/O: look up, count, and store what
a read of the server found.

The engine looks the tier up by the read plan's key (the user key, with its tag tokens when there are any) and takes
a ticket (``tier.seq``) *before* the server is read; :meth:`LocalReads.remember` stores a fresh hit under that
ticket, for as long as the entry's header says it stays fresh on the server.
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

    __slots__ = ("get", "stats", "tier", "tracker")

    def __init__(self, tier: LocalTier, tracker: Tracker, stats: StatsRegistry) -> None:
        self.tier = tier
        self.tracker = tracker
        self.stats = stats
        #: What the tier holds for a key (:meth:`LocalTier.get`: the stored ``Found`` or None).  The engine builds
        #: the key as the read plans do (the user key, or ``(key, tag tokens)``), takes ``tier.seq`` as the
        #: ticket of a read that may fill it, and counts a local hit itself: a hit pays no call here.
        self.get = tier.get

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
