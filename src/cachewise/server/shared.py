"""One local topology per process, shared by the caches that ask for it and stopped with the last of them.

``embedded+cluster://`` and ``embedded+sentinel://`` start their servers on first use; every later ``Cache`` of the
process joins them, and the last ``close()`` stops them.  :class:`Shared` is that reference count, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["Shared"]


class _Stoppable(Protocol):
    def stop(self) -> None: ...


T = TypeVar("T", bound=_Stoppable)


class Shared(Generic[T]):
    """``start()`` on the first :meth:`take` (or when the one taken stopped: ``running(it)`` is false); stopped on the
    :meth:`release` matching the last take."""

    def __init__(self, start: Callable[[], T], running: Callable[[T], bool]) -> None:
        self._start = start
        self._running = running
        self._held: tuple[T, int] | None = None
        self._lock = threading.Lock()

    def take(self) -> T:
        with self._lock:
            if self._held is not None and self._running(self._held[0]):
                self._held = (self._held[0], self._held[1] + 1)
                return self._held[0]
            started = self._start()
            self._held = (started, 1)
            return started

    def release(self, taken: T) -> None:
        with self._lock:
            if self._held is not None and self._held[0] is taken:
                if self._held[1] > 1:
                    self._held = (taken, self._held[1] - 1)
                    return
                self._held = None
        taken.stop()
