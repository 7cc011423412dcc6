"""The driver: runs the read-through flows' steps with blocking I/O or with asyncio.

A flow (:mod:`cachewise.engine.flows`) makes every decision and yields each piece of I/O; :mod:`cachewise.runner`
sends its commands through the executor, and this driver runs the other steps (:mod:`cachewise.engine.steps`):
the loader, the local flights, the lease heartbeats, the pub/sub waits, background refreshes.  Each step is a few
lines per kind of caller; the two differ only where one blocks and the other awaits.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from ..executor import Executor
from ..report import Reporter
from ..runner import Flow, arun, run
from ..transport.notify import FillNotifier
from .flights import Flight, LocalFlights
from .leases import LeaseKeeper
from .steps import FOLLOW, LEAD, Join, Joined, Listen, Load, Share, Spawn, Wait

__all__ = ["Driver"]


class _Run:
    """One flow being driven: its loader, what calls it, and the key it leads in this process (if any)."""

    __slots__ = ("lead", "loader", "where")

    def __init__(self, loader: Callable[[], Any] | None, where: str) -> None:
        self.loader = loader
        self.where = where
        self.lead: str | None = None


def _followed(flight: Flight, joined_at: float) -> Joined:
    """What a follower of a local flight gets: the leader's stored payload if the follower joined before that write
    was sent (see :mod:`cachewise.engine.flights`), else nothing (it reads the key once)."""
    payload = flight.payload
    return Joined(False, payload) if payload is not None and joined_at < flight.sent_at else FOLLOW


class Driver:
    """Runs flows for one cache: its executor, local flights, lease keeper, fill notifications and background tasks."""

    def __init__(
        self,
        executor: Executor,
        flights: LocalFlights,
        keeper: LeaseKeeper,
        notifier: Callable[[], FillNotifier],
        channel_of: Callable[[str], str],
        report: Reporter,
    ) -> None:
        self.executor = executor
        self.flights = flights
        self.keeper = keeper
        self._notifier = notifier
        #: The fill channel of an entry (the namespace's, or on a Cluster the entry's shard channel).
        self._channel_of = channel_of
        self._report = report
        #: Background refreshes in flight (async code); :meth:`aclose` waits for them.
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- the two shells -------------------------------------------------------------------------------------------
    def run(self, flow: Flow[Any], loader: Callable[[], Any] | None = None, where: str = "") -> Any:
        """Run ``flow`` with blocking I/O; ``loader`` answers its :class:`Load` steps."""
        state = _Run(loader, where)
        try:
            return run(self.executor, flow, lambda step: self._step(step, state))
        finally:
            self._end(state)

    async def arun(self, flow: Flow[Any], loader: Callable[[], Any] | None = None) -> Any:
        """Run ``flow`` with asyncio; ``loader`` (sync or async) answers its :class:`Load` steps."""
        state = _Run(loader, "")
        try:
            return await arun(self.executor, flow, lambda step: self._astep(step, state))
        finally:
            self._end(state)

    def _end(self, state: _Run) -> None:
        if state.lead is not None:
            self.flights.finish(state.lead)

    # -- steps ----------------------------------------------------------------------------------------------------
    def _step(self, step: Any, state: _Run) -> Any:
        match step:
            case Load(hold):
                with self.keeper.keep(hold):
                    return self._load_sync(state)
            case Join(entry, timeout, holder):
                flight = self._join(entry, state)
                if flight is None or holder:
                    return LEAD
                joined_at = time.monotonic()
                flight.wait(timeout)
                return _followed(flight, joined_at)
            case Share(entry, payload, sent_at):
                if state.lead is not None:
                    self.flights.share(state.lead, payload, sent_at)
                return None
            case Listen(entry):
                return self._notifier().ensure(self._channel_of(entry))
            case Wait(entry, timeout, since):
                notifier = self._notifier()
                waiter = notifier.register(entry)
                return self._filled(notifier, waiter, since) or notifier.wait(waiter, timeout)
            case Spawn(flow):  # sync code refreshes in the caller
                return self.run(flow, state.loader, state.where)
        raise TypeError(f"not a step: {step!r}")

    async def _astep(self, step: Any, state: _Run) -> Any:
        match step:
            case Load(hold):
                with self.keeper.keep(hold):
                    value = state.loader() if state.loader is not None else None
                    return await value if inspect.isawaitable(value) else value
            case Join(entry, timeout, holder):
                flight = self._join(entry, state)
                if flight is None or holder:
                    return LEAD
                joined_at = time.monotonic()
                await flight.await_(timeout)
                return _followed(flight, joined_at)
            case Listen(entry):
                notifier = self._notifier()
                channel = self._channel_of(entry)
                if notifier.ready(channel):
                    return True
                return await asyncio.get_running_loop().run_in_executor(None, notifier.ensure, channel)
            case Wait(entry, timeout, since):
                notifier = self._notifier()
                waiter = notifier.register(entry, loop=asyncio.get_running_loop())
                return self._filled(notifier, waiter, since) or await notifier.await_(waiter, timeout)
            case Spawn(flow):  # a background refresh; its failures are counted and logged, never raised
                task = asyncio.get_running_loop().create_task(self._quietly(flow, state.loader))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                return None
        return self._step(step, state)

    # -- shared pieces ----------------------------------------------------------------------------------------------
    def _load_sync(self, state: _Run) -> Any:
        value = state.loader() if state.loader is not None else None
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(f"{state.where}: the loader is async; use aget_or_set() or an async function")
        return value

    def _join(self, entry: str, state: _Run) -> Flight | None:
        """The flight to follow, or None when this caller now leads ``entry`` in this process."""
        flight = self.flights.join(entry)
        if flight is None:
            state.lead = entry
        return flight

    @staticmethod
    def _filled(notifier: FillNotifier, waiter: Any, since: float) -> bool:
        """Whether the entry was filled after ``since`` already (the waiter is then done)."""
        if notifier.filled_since(waiter.key, since):
            notifier.unregister(waiter)
            return True
        return False

    async def _quietly(self, flow: Flow[Any], loader: Callable[[], Any] | None) -> None:
        try:
            await self.arun(flow, loader)
        except Exception as exc:
            self._report.failure("background refresh", exc)
