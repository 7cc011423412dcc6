"""The read-through engine of one cache: the interface :class:`~cachewise.Cache` (a facade) and ``@cache.cached``
use.

* :meth:`Engine.read` / :meth:`Engine.aread`: one read (the hit path: one ``MGET``, judged; no flow);
* :meth:`Engine.get_or_load` / :meth:`Engine.aget_or_load`: cache-aside (a fresh hit returns after the read; the
  rest is a flow: :mod:`cachewise.engine.flows`);
* :meth:`Engine.run` / :meth:`Engine.arun`: any other flow (:mod:`cachewise.engine.ops`: writes, invalidations...).

It owns what the flows' steps need at run time: the executor, the local flights, the lease keeper (its heartbeats
go through the executor too) and the background refreshes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..entries import commands
from ..executor import Executor
from ..runner import Flow
from ..stats import Counters
from ..transport.command import Command
from .context import Context, Site
from .driver import Driver
from .firstread import FirstLease
from .flights import LocalFlights
from .flows import Found, first_command, first_found, first_read, reload, settle
from .leases import LeaseKeeper
from .locals import LocalReads
from .steps import Hold

__all__ = ["Engine"]


class Engine:
    """Reads, cache-aside and the other flows of one cache, with the sync or the asyncio client."""

    def __init__(self, context: Context, executor: Executor, local: LocalReads | None = None) -> None:
        self.context = context
        self.executor = executor
        #: The process-local tier in front of the server (None: off).
        self.local = local
        self.flights = LocalFlights()
        self.keeper = LeaseKeeper(self._renew)
        connection = executor.connection
        self.driver = Driver(
            executor,
            self.flights,
            self.keeper,
            lambda: connection.notifier,
            context.space.fill_channel_of,
            context.report,
        )

    # -- reads ------------------------------------------------------------------------------------------------------
    # Each pair is one design: the local tier, the plan and every verdict are shared (:mod:`.locals`, :mod:`.flows`);
    # the sync and async methods differ only in how they wait for the server.
    def read(self, key: str, tokens: tuple[str, ...] = (), scope: Counters | None = None, stale: bool = False) -> Found:
        """One read of ``key`` (counted): ``(value or MISSING, header, plan, reply)``; fails open."""
        local = self.local
        ticket = None if local is None else local.lookup(key, tokens, local.recorder(scope))  # a Found on a hit
        if type(ticket) is tuple:
            return ticket
        plan = self.context.read_plan(key, tokens)
        found = first_read(self.context, plan, self.executor.attempt(plan.mget or plan.command, scope), scope, stale)
        if type(found) is not tuple:
            found = self.driver.run(found)
        return found if ticket is None else local.remember(key, tokens, found, ticket, scope)  # type: ignore[union-attr,no-any-return]

    async def aread(
        self, key: str, tokens: tuple[str, ...] = (), scope: Counters | None = None, stale: bool = False
    ) -> Found:
        """Async :meth:`read`."""
        local = self.local
        ticket = None if local is None else local.lookup(key, tokens, local.recorder(scope))
        if type(ticket) is tuple:
            return ticket
        plan = self.context.read_plan(key, tokens)
        found = first_read(
            self.context, plan, await self.executor.aattempt(plan.mget or plan.command, scope), scope, stale
        )
        if type(found) is not tuple:
            found = await self.driver.arun(found)
        return found if ticket is None else local.remember(key, tokens, found, ticket, scope)  # type: ignore[union-attr,no-any-return]

    def get_or_load(
        self, site: Site, key: str, tokens: tuple[str, ...], loader: Callable[[], Any], ticket: int | None = None
    ) -> Any:
        """Cache-aside for a call from ``site``: the value of a fresh hit, else what the flow after the read returns
        (loading it if needed).  When a miss is likely, the read takes the lease too
        (:mod:`cachewise.engine.firstread`).  ``ticket``: what the caller's own look-up in the local tier
        (:meth:`LocalReads.lookup`, for ``site``) handed out on a miss, when it looked already."""
        ctx, local = self.context, self.local
        if ticket is None and local is not None and site.local:
            ticket = local.lookup(key, tokens, local.recorder(site.scope), site.protection)
            if type(ticket) is tuple:
                return ticket[0]
        plan = ctx.read_plan(key, tokens)
        command, ask = first_command(ctx, site, plan)
        found, lease = first_found(ctx, plan, ask, self.executor.attempt(command, site.scope), site.scope)
        if type(found) is not tuple:
            found = self.driver.run(found)
        why = self._settle(site, key, tokens, found, lease, ticket)
        if why is None:
            return found[0]
        return self.driver.run(reload(ctx, site.request(key, tokens), found, lease, why), loader, site.where)

    async def aget_or_load(
        self, site: Site, key: str, tokens: tuple[str, ...], loader: Callable[[], Any], ticket: int | None = None
    ) -> Any:
        """Async :meth:`get_or_load` (``loader`` may be async; a refresh runs in the background when ``site`` says
        so)."""
        ctx, local = self.context, self.local
        if ticket is None and local is not None and site.local:
            ticket = local.lookup(key, tokens, local.recorder(site.scope), site.protection)
            if type(ticket) is tuple:
                return ticket[0]
        plan = ctx.read_plan(key, tokens)
        command, ask = first_command(ctx, site, plan)
        found, lease = first_found(ctx, plan, ask, await self.executor.aattempt(command, site.scope), site.scope)
        if type(found) is not tuple:
            found = await self.driver.arun(found)
        why = self._settle(site, key, tokens, found, lease, ticket)
        if why is None:
            return found[0]
        return await self.driver.arun(reload(ctx, site.request(key, tokens), found, lease, why), loader)

    def _settle(
        self, site: Site, key: str, tokens: tuple[str, ...], found: Found, lease: FirstLease | None, ticket: Any
    ) -> str | None:
        """:func:`~cachewise.engine.flows.settle` for a call from ``site``; a fresh hit fills the local tier under
        ``ticket`` (None: the call does not use it)."""
        why = settle(self.context, site.protection, found, lease)
        if ticket is not None:
            local: LocalReads = self.local  # type: ignore[assignment]
            local.remember(key, tokens, found, ticket, site.scope) if why is None else local.missed(site.scope)
        return why

    # -- other flows ------------------------------------------------------------------------------------------------
    def run(self, flow: Flow[Any]) -> Any:
        """Run a flow of :class:`~cachewise.runner.Send` steps (and any other engine step) with blocking I/O."""
        return self.driver.run(flow)

    async def arun(self, flow: Flow[Any]) -> Any:
        """Async :meth:`run`."""
        return await self.driver.arun(flow)

    # -- lease heartbeats (in the keeper's thread) ------------------------------------------------------------------
    def _renew(self, holds: list[Hold]) -> list[bool | BaseException]:
        """Extend the leases of loads in progress, in one round trip, with the counters they were taken under: a
        lease whose counters moved (its value would be stale) or that is no longer ours is let go (False)."""
        space, fresh = self.context.space, commands.fresh_value()
        parts: list[Command] = []
        for hold in holds:
            parts += (
                commands.counters(hold.counters, hold.lease_ms, fresh),
                commands.extend(space, hold.key, hold.token, hold.lease_ms),
            )
        replies = self.executor.run(Command.join("lease heartbeat", parts))
        answers: list[bool | BaseException] = []
        moved = []
        for i, hold in enumerate(holds):
            (values, _), extended = replies[2 * i], replies[2 * i + 1]
            if extended != 1:
                answers.append(False)
            elif tuple(values) != hold.stamps:  # an invalidation during the load: give the lease back now
                moved.append(commands.release(space, hold.key, hold.token))
                answers.append(False)
            else:
                answers.append(True)
        if moved:
            self.executor.attempt(Command.join("release", moved))
        return answers

    # -- life cycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.keeper.close()
        if self.local is not None:
            self.local.tracker.close()

    async def aclose(self) -> None:
        """Wait for background refreshes, then stop the lease keeper."""
        if self.driver.tasks:
            await asyncio.gather(*self.driver.tasks, return_exceptions=True)
        self.close()
