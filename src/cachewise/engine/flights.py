"""In-process single flight: concurrent misses of one key in one process make one trip to the lease.

The first caller of a key in this process leads (it goes on to the cross-process lease); the others wait here —
threads on an ``Event``, asyncio tasks on a future of their own loop.  When the leader stored its value under its
lease, a follower that joined *before that write was sent* takes the value (decoded afresh from the stored bytes, so
callers never share one mutable object): any write acknowledged before the follower started was acknowledged
before the leader's write, so the leader's value reflects it (or the write would have been refused).  Any other
follower reads the key once.  A burst of callers in one process thus costs one lease request and one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Flight", "LocalFlights"]


class Flight:
    """One key being loaded by a caller of this process.  Its waiting parts (an ``Event``, futures) are made by the
    first follower: most flights have none, and an ``Event`` costs more to build than the rest of a flight."""

    __slots__ = ("_event", "_finished", "_futures", "_lock", "payload", "sent_at")

    def __init__(self) -> None:
        #: The stored payload, and when the write that stored it was sent (``time.monotonic()``).
        self.payload: bytes | None = None
        self.sent_at = float("inf")
        self._finished = False
        self._event: threading.Event | None = None
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    def wait(self, timeout: float) -> bool:
        with self._lock:
            if self._finished:
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(max(0.0, timeout))

    async def await_(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._finished:
                return True
            self._futures.append((loop, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            event, futures, self._futures = self._event, self._futures, []
        if event is not None:
            event.set()
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LocalFlights:
    """The keys being loaded in this process right now."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()

    def join(self, key: str) -> Flight | None:
        """The flight to wait for, or None when the caller is now the leader of ``key`` (it must :meth:`finish`)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                self._flights[key] = Flight()
            return flight

    def share(self, key: str, payload: bytes, sent_at: float) -> None:
        """The leader of ``key`` stored ``payload`` with a write sent at ``sent_at``."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.payload, flight.sent_at = payload, sent_at

    def finish(self, key: str) -> None:
        with self._lock:
            flight = self._flights.pop(key, None)
        if flight is not None:
            flight.finish()
