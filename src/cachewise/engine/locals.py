"""How the engine's reads use the local tier (:mod:`cachewise.local`), without I/O: look up, count, and store what
a read of the server found.

:meth:`LocalReads.lookup` looks the tier up by the read plan's key (the user key, with its tag tokens when there are
any) and, on a miss, hands out a ticket (``tier.seq``) taken *before* the server is read;
:meth:`LocalReads.remember` stores a fresh hit under that ticket, for as long as the entry's header says it stays
fresh on the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from ..entries import verdicts
from ..local.tier import LocalTier
from ..local.tracking import Tracker
from ..stats import Counters, StatsRegistry
from .reads import EntryReader
from .stampede import XFETCH_HORIZON, Protection

__all__ = ["LocalReads"]


class LocalReads:
    """The local tier of one cache as its reads see it."""

    __slots__ = ("_get", "_recorders", "_refresh_due", "direct", "stats", "tier", "tracker")

    def __init__(self, tier: LocalTier, tracker: Tracker, stats: StatsRegistry, reader: EntryReader) -> None:
        self.tier = tier
        self.tracker = tracker
        self.stats = stats
        self._get = tier.get
        self._recorders: dict[int, Callable[[], int]] = {}
        #: Records a local hit of the namespace's own calls (``cache.get``...).
        self.direct = stats.local_recorder(None)
        self._refresh_due = reader.refresh_due

    def lookup(
        self, key: str, tokens: tuple[str, ...], record: Callable[[], int], protection: Protection | None = None
    ) -> Any:
        """A local hit for the read of ``key`` with tag ``tokens`` (the stored ``Found``, counted by calling
        ``record``: :meth:`recorder` of the call's scope), or on a miss the
        ticket under which the server's answer may fill the tier (:meth:`remember`).  With ``protection`` (a
        cache-aside call), a hit whose header says it is due for a refresh is a miss: it refreshes as a server
        hit would, and the miss odds stay the server reads' own.  The ticket is taken before the server is read, so
        an invalidation at any point after it refuses the fill."""
        found = self._get((key, tokens) if tokens else key)
        if found is None:
            return self.tier.seq
        if protection is not None:
            head = found[1]
            # EntryReader.refresh_due's first test, inline (an entry with no grace period and no load time, or
            # XFetch off, is never due): most hits need no call for it.
            if not (head[4] == b"0" and (head[5] == b"0" or not protection.early_refresh)):
                # Far from its expiry, XFetch cannot fire (XFETCH_HORIZON): no draw.  found[3] is what
                # remember() stored: the server entry's expiry and load time, in ms.
                expiry_ms, load_ms = found[3]
                beta = protection.early_refresh
                if time.time() * 1000 >= expiry_ms - XFETCH_HORIZON * beta * load_ms and (
                    self._refresh_due(head, protection) is not None
                ):
                    return self.tier.seq
        record()
        return found

    def recorder(self, scope: Counters | None) -> Callable[[], int]:
        """What :meth:`lookup` calls to count a local hit in ``scope`` (None: the namespace's own calls)."""
        if scope is None:
            return self.direct
        recorder = self._recorders.get(id(scope))
        if recorder is None:
            recorder = self._recorders[id(scope)] = self.stats.local_recorder(scope)
        return recorder

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
        written, ttl, _, load = times
        left = (written + ttl) / 1000 - time.time()
        lkey: Hashable = (key, tokens) if tokens else key
        # Stored as a read found it, but with the entry's expiry and load time (ms) where the server's reply was.
        self.tier.fill(lkey, (*found[:3], (written + ttl, load)), found[2].keys, ticket, left, len(reply[0]))
        return found

    def missed(self, scope: Counters | None) -> None:
        self.stats.add(scope, "local_misses")
