"""Drivers: run a flow's steps with the sync or the asyncio client.

A flow (:mod:`cachewise.flows`) makes every decision and yields each piece of I/O; these two drivers are the only
place where a step becomes a server call, a wait or a load.  Each step is a few lines per client, so the sync and
async paths differ only in ``await``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import flows
from .failures import CircuitOpen
from .local_flights import Flight
from .server import resp

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["arun", "run"]


def _follow(flight: Flight, joined_at: float) -> bytes | bool:
    """What a follower of a local flight gets: the leader's stored payload if the follower joined before that write
    was sent (see :mod:`cachewise.local_flights`), else True (read the key once)."""
    payload = flight.payload
    return payload if payload is not None and joined_at < flight.sent_at else True


def run(cache: Cache, flow: flows.Flow, loader: Callable[[], Any], where: str) -> Any:
    """Drive a flow with the sync client."""
    reply: Any = None
    error: BaseException | None = None
    lead: str | None = None
    try:
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                reply, lead = _step(cache, step, loader, where, lead)
            except BaseException as exc:
                error = exc
    finally:
        if lead is not None:
            cache._flights.finish(lead)


def _step(
    cache: Cache, step: tuple[Any, ...], loader: Callable[[], Any], where: str, lead: str | None
) -> tuple[Any, str | None]:
    """Run one step of a flow with the sync client: ``(reply, the key this caller now leads)``."""
    kind = step[0]
    if kind == flows.MGET:
        if not cache._breaker.allow():
            raise CircuitOpen("circuit breaker open")
        started = time.perf_counter()
        reply = cache.connection.execute_packed(resp.command("MGET", *step[1]))
        cache._stats.roundtrip(None, time.perf_counter() - started)
        return reply, lead
    if kind == flows.SCRIPT:
        return cache._call(step[1], None), lead
    if kind == flows.LOAD:
        held = cache._hold(step[1])
        try:
            value = loader()
        finally:
            if held is not None:
                cache._keeper.drop(held)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError(f"{where}: the loader is async; use aget_or_set() or an async function")
        return value, lead
    if kind == flows.JOIN:
        _, entry, timeout = step
        flight = cache._flights.join(entry)
        if flight is None:
            return False, entry
        joined_at = time.monotonic()
        flight.wait(timeout)
        return _follow(flight, joined_at), lead
    if kind == flows.SHARE:
        if lead is not None:
            cache._flights.share(lead, step[2], step[3])
        return None, lead
    if kind == flows.LISTEN:
        return cache.connection.notifier.ensure(cache.keyspace.fill_channel), lead
    if kind == flows.WAIT:
        _, entry, timeout, since = step
        notifier = cache.connection.notifier
        waiter = notifier.register(entry)
        if notifier.filled_since(entry, since):
            notifier.unregister(waiter)
            return True, lead
        return notifier.wait(waiter, timeout), lead
    # SPAWN: sync code refreshes in the caller
    return run(cache, step[1], loader, where), lead


async def arun(cache: Cache, flow: flows.Flow, loader: Callable[[], Any]) -> Any:
    """Drive a flow with the asyncio client."""
    reply: Any = None
    error: BaseException | None = None
    lead: str | None = None
    try:
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                reply, lead = await _astep(cache, step, loader, lead)
            except BaseException as exc:
                error = exc
    finally:
        if lead is not None:
            cache._flights.finish(lead)


async def _astep(
    cache: Cache, step: tuple[Any, ...], loader: Callable[[], Any], lead: str | None
) -> tuple[Any, str | None]:
    """Run one step of a flow with the asyncio client: ``(reply, the key this caller now leads)``."""
    kind = step[0]
    if kind == flows.MGET:
        if not cache._breaker.allow():
            raise CircuitOpen("circuit breaker open")
        started = time.perf_counter()
        reply = await cache.connection.aexecute_packed(resp.command("MGET", *step[1]))
        cache._stats.roundtrip(None, time.perf_counter() - started)
        return reply, lead
    if kind == flows.SCRIPT:
        return await cache._acall(step[1], None), lead
    if kind == flows.LOAD:
        held = cache._hold(step[1])
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
        finally:
            if held is not None:
                cache._keeper.drop(held)
        return value, lead
    if kind == flows.JOIN:
        _, entry, timeout = step
        flight = cache._flights.join(entry)
        if flight is None:
            return False, entry
        joined_at = time.monotonic()
        await flight.await_(timeout)
        return _follow(flight, joined_at), lead
    if kind == flows.SHARE:
        if lead is not None:
            cache._flights.share(lead, step[2], step[3])
        return None, lead
    if kind == flows.LISTEN:
        notifier, channel = cache.connection.notifier, cache.keyspace.fill_channel
        if notifier.ready(channel):
            return True, lead
        return await asyncio.get_running_loop().run_in_executor(None, notifier.ensure, channel), lead
    if kind == flows.WAIT:
        _, entry, timeout, since = step
        notifier = cache.connection.notifier
        waiter = notifier.register(entry, loop=asyncio.get_running_loop())
        if notifier.filled_since(entry, since):
            notifier.unregister(waiter)
            return True, lead
        return await notifier.await_(waiter, timeout), lead
    # SPAWN: a background refresh; its failures are counted and logged, never raised
    task = asyncio.get_running_loop().create_task(_arun_quietly(cache, step[1], loader))
    cache._background.add(task)
    task.add_done_callback(cache._background.discard)
    return None, lead


async def _arun_quietly(cache: Cache, flow: flows.Flow, loader: Callable[[], Any]) -> None:
    try:
        await arun(cache, flow, loader)
    except Exception as exc:
        cache._failed("background refresh", exc, None)
