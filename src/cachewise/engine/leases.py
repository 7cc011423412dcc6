"""Lease heartbeats: a lease is kept alive for as long as its holder is still loading.

A lease's TTL is a guess (a configured ``lease_ttl``, or derived from the loads observed so far).  A load that
outlasts it would lose the lease: its value would not be stored, and the waiters would take the lease in turn and
run the load again — for a multi-second query, the stampede leases exist to prevent.  So while a load runs, every
third of its lease's TTL, the lease is extended to a full TTL from then (``extend.lua``: only while it is still ours,
so a lease voided by a delete or an invalidation is never brought back).  A holder that dies stops extending, and
its lease expires one TTL later, as before.

One daemon thread per cache does the extending, with the sync client (also for asyncio loads: no event loop is
involved); the leases due at the same moment are extended together, in one round trip, so one cache's many loads
cost no more than one.  Registering a load costs a dict insert: with nothing to extend, the thread looks again every
third of the last lease's TTL (clamped to [10 ms, 1 s]) rather than sleeping until told, so a run of short loads
never wakes it (a wake-up per miss costs a thread switch, more than the rest of the miss's client work); it is woken
only for a lease due sooner than it will look.  A load shorter than a third of its lease is never extended.  The
thread ends once it has had nothing to extend for ``idle`` seconds (the next load starts another), so a cache that
is never closed leaves no thread behind.  In a forked child the keeper starts afresh (its thread and lock state
were the parent's).

The keeper itself does no I/O: it is given the function that extends a list of leases.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from ..forks import reset_in_child
from .steps import Hold

__all__ = ["Held", "Keeping", "LeaseKeeper"]

#: How often an idle keeper thread looks for new leases (a third of the last lease's TTL, clamped), in seconds.
_MIN_TICK = 0.01
_MAX_TICK = 1.0


#: Extends leases: given what :meth:`LeaseKeeper.hold` was given for each, says for each whether it was still
#: ours (True: extended; False: it was not, its heartbeat stops) or the exception it met (tried again a third of a
#: TTL later); raising fails them all that way.
Renew = Callable[[list[Any]], list["bool | BaseException"]]


class Held:
    """One lease held by a load in progress."""

    __slots__ = ("due", "id", "lease", "lease_ms", "until")

    def __init__(self, lease: Any, lease_ms: int, due: float, until: float, id: int) -> None:
        #: What the renew function needs to extend it.
        self.lease = lease
        self.lease_ms = lease_ms
        #: When to extend next, and the last moment to extend at all (``time.monotonic()``).
        self.due = due
        self.until = until
        self.id = id


class LeaseKeeper:
    """Extends the leases of loads in progress with ``renew`` (see :data:`Renew`): a lease no longer ours stops
    its heartbeat; an exception (the server is failing) is retried a third of a TTL later, by which time the lease
    is either still ours or gone.  A lease is extended for at most ``for_at_most`` seconds (the longest its waiters
    wait): a load that hangs then loses it, and one of the waiters takes over, rather than all of them loading once
    their wait is over."""

    def __init__(self, renew: Renew, name: str = "cachewise-leases", idle: float = 30.0) -> None:
        self._renew = renew
        self._name = name
        self._idle = idle
        self._ids = itertools.count()
        #: Leases extended, heartbeats stopped because the lease was no longer ours, and leases let go because
        #: their load outlasted ``for_at_most`` (for tests and stats).
        self.extended = 0
        self.lost = 0
        self.given_up = 0
        #: Round trips the extensions took (several leases due together share one).
        self.round_trips = 0
        #: The longest a renewal was sent after it was due, in seconds (a lease lapses when this passes two thirds
        #: of its TTL: a stalled process, a long GC pause, a slow server).
        self.most_late = 0.0
        self._closed = False
        self.reset_after_fork()
        reset_in_child(self)

    def reset_after_fork(self) -> None:
        """A fresh lock, no leases, no thread (at start, and in a forked child)."""
        self._held: dict[int, Held] = {}
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")  # when the thread will look again (it is told sooner only when needed)
        self._tick = _MAX_TICK  # how often it looks while nothing is held

    def hold(self, lease: Any, lease_ms: int, for_at_most: float = float("inf")) -> Held:
        """Keep a lease of ``lease_ms`` alive (renewed every third of it) until :meth:`drop`, for at most
        ``for_at_most`` seconds; call it when the load starts."""
        now = time.monotonic()
        held = Held(lease, lease_ms, now + lease_ms / 3000, now + for_at_most, next(self._ids))
        with self._cond:
            if self._closed:
                return held
            self._tick = min(_MAX_TICK, max(_MIN_TICK, lease_ms / 3000))
            self._held[held.id] = held
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif held.due < self._wake_at:
                self._cond.notify()  # it sleeps until a later lease's time: have it look again now
        return held

    def keep(self, hold: Hold | None) -> Keeping:
        """Keep the lease ``hold`` names alive while the ``with`` block (a load) runs; None: nothing to keep."""
        return _NOTHING if hold is None else Keeping(self, hold)

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
        """Wait until some leases are due; those leases, or None when closed or idle for too long (the thread
        ends; the next :meth:`hold` starts another)."""
        with self._cond:
            idle_since = time.monotonic()
            while not self._closed and threading.current_thread() is self._thread:
                now = time.monotonic()
                if not self._held:
                    if now - idle_since >= self._idle:
                        self._thread = None
                        return None
                    tick = min(self._tick, self._idle - (now - idle_since))
                    self._wake_at = now + tick
                    self._cond.wait(tick)
                    continue
                idle_since = now
                for held in [h for h in self._held.values() if h.until <= now]:
                    del self._held[held.id]  # its waiters have stopped waiting: let the lease expire
                    self.given_up += 1
                if any(h.due <= now for h in self._held.values()):
                    self._wake_at = now
                    # with the due ones, those due within a sixth of their TTL: one round trip rather than two
                    return [h for h in self._held.values() if h.due - h.lease_ms / 6000 <= now]
                if self._held:
                    self._wake_at = min(h.due for h in self._held.values())
                    self._cond.wait(self._wake_at - now)
            return None

    def _run(self) -> None:
        while (due := self._next()) is not None:
            now = time.monotonic()
            self.most_late = max(self.most_late, max(now - held.due for held in due))
            self.round_trips += 1
            try:
                answers: list[bool | BaseException] = self._renew([held.lease for held in due])
            except Exception as exc:  # the server is failing (counted by the cache): try again a third of a TTL later
                answers = [exc] * len(due)
            done = time.monotonic()
            with self._cond:
                for held, ours in zip(due, answers, strict=True):
                    if held.id not in self._held:
                        continue  # the load ended meanwhile
                    if ours is False:
                        self.lost += 1
                        del self._held[held.id]
                        continue
                    self.extended += ours is True
                    held.due = done + held.lease_ms / 3000


class Keeping:
    """The ``with`` block of :meth:`LeaseKeeper.keep` (a class, not a generator: it runs on every leased miss)."""

    __slots__ = ("_held", "_hold", "_keeper")

    def __init__(self, keeper: LeaseKeeper | None, hold: Hold | None) -> None:
        self._keeper = keeper
        self._hold = hold
        self._held: Held | None = None

    def __enter__(self) -> None:
        if self._keeper is not None and self._hold is not None:
            self._held = self._keeper.hold(self._hold, self._hold.lease_ms, self._hold.budget)

    def __exit__(self, *exc: object) -> None:
        if self._keeper is not None and self._held is not None:
            self._keeper.drop(self._held)


_NOTHING = Keeping(None, None)
