"""Lease heartbeats: a lease is kept alive for as long as its holder is still loading.

A lease's TTL is a guess (a configured ``lease_ttl``, or derived from the loads observed so far).  A load that
outlasts it would lose the lease: its value would not be stored, and the waiters would take the lease in turn and
run the load again — for a multi-second query, the stampede leases exist to prevent.  So while a load runs, every
third of its lease's TTL, the lease is extended to a full TTL from then (``extend.lua``: only while it is still ours,
so a lease voided by a delete or an invalidation is never brought back).  A holder that dies stops extending, and
its lease expires one TTL later, as before.

One daemon thread per cache does the extending, with the sync client (also for asyncio loads: no event loop is
involved).  Registering a load costs a dict insert, plus waking the thread when it was idle; a load shorter than a
third of its lease is never extended.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Held", "LeaseKeeper"]


class Held:
    """One lease held by a load in progress."""

    __slots__ = ("due", "id", "lease_ms", "renew")

    def __init__(self, renew: Callable[[], bool], lease_ms: int, due: float, id: int) -> None:
        self.renew = renew
        self.lease_ms = lease_ms
        #: When to extend next (``time.monotonic()``).
        self.due = due
        self.id = id


class LeaseKeeper:
    """Extends the leases of loads in progress.  Each lease comes with its ``renew()``, which extends it and returns
    whether it was still ours: False stops the heartbeat of that lease; an exception (the server is failing) is
    retried a third of a TTL later, by which time the lease is either still ours or gone."""

    def __init__(self, name: str = "cachewise-leases") -> None:
        self._name = name
        self._held: dict[int, Held] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Extensions sent, and heartbeats stopped because the lease was no longer ours (for tests and stats).
        self.extended = 0
        self.lost = 0

    def hold(self, renew: Callable[[], bool], lease_ms: int) -> Held:
        """Keep a lease of ``lease_ms`` alive (``renew()`` every third of it) until :meth:`drop`; call it when the
        load starts."""
        held = Held(renew, lease_ms, time.monotonic() + lease_ms / 3000, next(self._ids))
        with self._cond:
            if self._closed:
                return held
            was_idle = not self._held
            self._held[held.id] = held
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif was_idle:
                self._cond.notify()
        return held

    def drop(self, held: Held) -> None:
        """The load ended (stored, failed or cancelled): stop extending its lease."""
        with self._cond:
            self._held.pop(held.id, None)

    def close(self) -> None:
        """Stop the thread (leases still held then expire on their own)."""
        with self._cond:
            self._closed = True
            self._held.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _next(self) -> list[Held] | None:
        """Wait until some leases are due; those leases, or None when closed."""
        with self._cond:
            while not self._closed:
                if not self._held:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                due = [h for h in self._held.values() if h.due <= now]
                if due:
                    return due
                self._cond.wait(min(h.due for h in self._held.values()) - now)
            return None

    def _run(self) -> None:
        while (due := self._next()) is not None:
            for held in due:
                try:
                    ours: bool | None = held.renew()
                except Exception:  # the server is failing (counted by the cache): try again a third of a TTL later
                    ours = None
                with self._cond:
                    if held.id not in self._held:
                        continue  # the load ended meanwhile
                    if ours is False:
                        self.lost += 1
                        del self._held[held.id]
                        continue
                    self.extended += ours is True
                    held.due = time.monotonic() + held.lease_ms / 3000
