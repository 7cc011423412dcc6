"""A circuit breaker for one cache server, without I/O: stop paying timeouts to a server that is down.

* **closed** — calls go to the server.  ``failure_threshold`` failures in a row open it.
* **open** — calls skip the server at once (a read is a miss, a write is skipped: ~0 ms instead of a timeout each)
  for ``reset_timeout`` seconds.
* **half-open** — one call (the probe) goes through; its success closes the breaker, its failure opens it again.
  A probe that never reports back (its caller died) is replaced after another ``reset_timeout``.

The clock is injected, so the state machine is tested without waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

log = logging.getLogger("cachewise")


class CircuitBreaker:
    """Consecutive-failure breaker; thread-safe, and one attribute read on the closed fast path."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 1.0,
        *,
        name: str = "cache server",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0 s")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self.state = CLOSED
        self.failures = 0
        #: Closed with no failure counted: the hot path's one read (neither :meth:`allow` nor :meth:`success` need
        #: be called while it holds).
        self.clear = True
        #: Times the breaker opened (from closed or from a failed probe).
        self.opens = 0
        self._until = 0.0  # open: when to let a probe through; half-open: when to give up on the probe

    def allow(self) -> bool:
        """Whether a call may go to the server now (True at once while :attr:`clear`)."""
        if self.state is CLOSED:
            return True
        with self._lock:
            now = self._clock()
            if self.state is CLOSED:
                return True
            if now < self._until:
                return False
            # open and its time is up, or a half-open probe that never reported: let one call probe
            self.state = HALF_OPEN
            self._until = now + self.reset_timeout
            return True

    def success(self) -> None:
        """The server answered."""
        if self.state is CLOSED and not self.failures:
            return
        with self._lock:
            if self.state is not CLOSED:
                log.warning("cache server %s answers again: circuit breaker closed", self.name)
            self.state = CLOSED
            self.failures = 0
            self.clear = True

    def failure(self) -> None:
        """The server failed a call (refused, timed out, errored)."""
        with self._lock:
            self.failures += 1
            self.clear = False
            if self.state is HALF_OPEN or (self.state is CLOSED and self.failures >= self.failure_threshold):
                if self.state is CLOSED:
                    log.warning(
                        "cache server %s failed %d calls in a row: circuit breaker open, calls skip the cache for "
                        "%.1f s at a time (reads load from the source, writes are skipped)",
                        self.name,
                        self.failures,
                        self.reset_timeout,
                    )
                self.state = OPEN
                self.opens += 1
                self._until = self._clock() + self.reset_timeout

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.state}, failures={self.failures}, opens={self.opens})"
