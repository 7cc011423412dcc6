"""Run one test body against the sync API and against its async twins (the ``mode`` fixture of ``conftest.py``).

Every public method of cachewise that does I/O has an async twin named with an ``a`` prefix (``get``/``aget``,
``hit``/``ahit``, ``materialize``/``amaterialize``...).  A contract test written once with ``c = mode(cache)`` and
plain calls (``c.get("k")``) then checks both: in sync mode ``c.get(...)`` is ``cache.get(...)``; in async mode it is
``cache.aget(...)``, run to completion on one event loop that the fixture owns for the whole test (so the asyncio
connection pools live from one call to the next, as in an application), with its result returned and its
exceptions raised unchanged.

Anything that is not a method with an async twin (``c.keyspace``, ``c.namespace``, ``c.stats()``, ``c.key(...)``,
``c.clear()``) is the wrapped object's own attribute, in both modes.  ``with mode(Cache(...)) as c:`` enters and
leaves the cache with ``__enter__``/``__exit__`` or ``__aenter__``/``__aexit__``: in async mode the cache's
asyncio pool is then closed on the fixture's loop.

At the end of the test, in async mode, background tasks (stale refreshes) are awaited, the asyncio pool that the
loop opened on every wrapped object's cache is closed (``Connection.aclose_loop``), and only then is the loop
closed: no "unclosed connection" or "Task was destroyed" noise.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast, overload

__all__ = ["MODES", "Mode"]

T = TypeVar("T")
MODES = ("sync", "async")


class Mode:
    """``"sync"`` or ``"async"``: how a test calls the API (see the module documentation)."""

    def __init__(self, name: str) -> None:
        if name not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {name!r}")
        self.name = name
        self.is_async = name == "async"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wrapped: list[
            Any
        ] = []  # every object given to mode(...), whose cache's asyncio pool is closed at the end
        self._closed = False
        #: Called once, at the first ``mode(obj)``; the fixture uses it to close the pools before any other
        #: fixture's teardown (a ``Cache`` closed first would forget its asyncio pools without closing them).
        self.on_first_use: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Mode({self.name!r})"

    # -- running coroutines -------------------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop of this test (created at first use, closed at the end of the test)."""
        if self._closed:
            raise RuntimeError("this test's mode is closed: its event loop is gone")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    @overload
    def run(self, value: Awaitable[T]) -> T: ...
    @overload
    def run(self, value: T) -> T: ...
    def run(self, value: Any) -> Any:
        """``value`` awaited on this test's event loop if it is awaitable (in either mode), else ``value`` itself."""
        if inspect.isawaitable(value):
            return self.loop.run_until_complete(value)
        return value

    # -- proxies ------------------------------------------------------------------------------------------------
    def __call__(self, obj: T) -> T:
        """A proxy of ``obj`` that calls its sync methods in sync mode and their async twins in async mode.

        Typed as ``obj``'s own type: the proxy has the sync method signatures, and returns what they return."""
        if isinstance(obj, _Proxy):
            return cast(T, obj)
        if not self._wrapped and self.on_first_use is not None:
            self.on_first_use()
        if all(o is not obj for o in self._wrapped):
            self._wrapped.append(obj)
        return cast(T, _Proxy(self, obj))

    # -- teardown -----------------------------------------------------------------------------------------------
    def close_pools(self) -> None:
        """Finish the loop's pending tasks and close the asyncio pool it opened on each wrapped object's cache (they
        stay usable: the next async call opens a new pool)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for connection in self._connections():
            loop.run_until_complete(connection.aclose_loop())

    def close(self) -> None:
        """Close the pools (see :meth:`close_pools`), then the event loop; idempotent."""
        if self._closed:
            return
        try:
            self.close_pools()
        finally:
            self._closed = True
            loop, self._loop = self._loop, None
            if loop is not None and not loop.is_closed():
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())  # amaterialize's worker threads
                finally:
                    loop.close()

    def _connections(self) -> list[Any]:
        """The ``Connection`` of each wrapped object's cache, once each: a ``Cache`` has ``.connection``; a
        ``SessionStore``, a ``FeatureStore`` and a ``RateLimiter`` keep their cache as ``.cache``."""
        found: list[Any] = []
        for obj in self._wrapped:
            connection = _connection_of(obj)
            if connection is not None and all(c is not connection for c in found):
                found.append(connection)
        return found


def _connection_of(obj: Any) -> Any:
    for holder in (obj, getattr(obj, "cache", None)):
        connection = getattr(holder, "connection", None)
        if connection is not None and hasattr(connection, "aclose_loop"):
            return connection
    return None


def _twin(obj: Any, name: str) -> Callable[..., Awaitable[Any]] | None:
    """``obj``'s async twin of the method ``name`` (``"a" + name``, a coroutine function), or None."""
    twin = getattr(obj, "a" + name, None)
    return twin if twin is not None and inspect.iscoroutinefunction(twin) else None


class _Proxy:
    """See :meth:`Mode.__call__`."""

    __slots__ = ("_mode", "_target")

    def __init__(self, mode: Mode, target: Any) -> None:
        object.__setattr__(self, "_mode", mode)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        target, mode = self._target, self._mode
        attr = getattr(target, name)
        if not mode.is_async or name.startswith("__") or not callable(attr):
            return attr
        twin = _twin(target, name)
        if twin is None:
            return attr

        @functools.wraps(twin)
        def call(*args: Any, **kwargs: Any) -> Any:
            return mode.loop.run_until_complete(twin(*args, **kwargs))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return repr(self._target)

    def __enter__(self) -> Any:
        target, mode = self._target, self._mode
        entered = mode.run(target.__aenter__()) if mode.is_async else target.__enter__()
        return self if entered is target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        target, mode = self._target, self._mode
        return mode.run(target.__aexit__(*exc_info)) if mode.is_async else target.__exit__(*exc_info)
