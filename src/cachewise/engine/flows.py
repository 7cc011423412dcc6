"""Cache-aside past the first read, written once for sync and async code, as flows (see :mod:`cachewise.runner`).

A flow makes every decision and yields each piece of I/O as a step (:class:`~cachewise.runner.Send` and the steps
of :mod:`cachewise.engine.steps`); the engine's driver runs the steps.  So leases, waiting, early refresh and stale
serving exist once, as in ``h11``/``httpcore``, and are tested without a server by feeding them replies.

The hit path never enters a flow: the engine reads, judges with :func:`first_read`, and :func:`settle` says whether
anything remains to be done (a fresh hit: nothing, and the call's :class:`~cachewise.engine.context.Request` is
never built); :func:`reload` is the flow of what remains.  When the first read took the lease too
(:mod:`cachewise.engine.firstread`), its answer comes with the read, and the flow starts from it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..entries import commands, verdicts
from ..entries.envelope import payload_of
from ..executor import Failed
from ..failures import SERVER_ERRORS
from ..missing import MISSING
from ..runner import Flow, Send
from ..stats import Counters
from ..transport.command import Command
from .context import Context, Request, Site
from .firstread import FirstLease, LeaseRead, lease_answer, lease_read
from .reads import FAILED, NO_HEAD, RECHECK, ReadPlan
from .stampede import Protection, new_token
from .steps import Hold, Join, Joined, Listen, Load, Share, Spawn, Wait

__all__ = ["after_read", "first_command", "first_found", "first_read", "recheck", "reload", "settle"]

#: What a read found: ``(value or MISSING, header tokens, the plan it ran, its reply or None)``.
Found = tuple[Any, list[bytes], ReadPlan, Any]


def first_read(ctx: Context, plan: ReadPlan, reply: Any, scope: Counters | None, serve_stale: bool) -> Any:
    """What the first read of a call found (a :data:`Found`), or the flow that reads again (:func:`recheck`) when
    the entry carries tags the caller did not name.  A failed read is a miss with the header :data:`FAILED`."""
    if type(reply) is Failed:
        ctx.stats.add(scope, "misses")
        return MISSING, FAILED, plan, None
    value, head = ctx.reader.verdict(plan, reply, scope, serve_stale)
    if value is RECHECK:
        return recheck(ctx, plan, reply[0], scope, serve_stale)
    return value, head, plan, reply


def recheck(ctx: Context, plan: ReadPlan, raw: bytes, scope: Counters | None, serve_stale: bool) -> Flow[Found]:
    """Read an entry again with the counters of the tags it carries (the caller named other tags, or none)."""
    tags = verdicts.tags_of(raw)
    if tags is None:
        ctx.reader.invalid(scope, "corrupt entry tags")
        ctx.stats.add(scope, "misses")
        return MISSING, NO_HEAD, plan, None
    again = ctx.read_plan(plan.key, tags)
    try:
        reply = yield Send(again.command, scope)
    except SERVER_ERRORS:
        ctx.stats.add(scope, "misses")
        return MISSING, FAILED, again, None
    value, head = ctx.reader.verdict(again, reply, scope, serve_stale)
    if value is RECHECK:  # its tags changed between the two reads: a miss
        ctx.stats.add(scope, "misses")
        return MISSING, NO_HEAD, again, None
    return value, head, again, reply


def first_found(
    ctx: Context, plan: ReadPlan, ask: LeaseRead | None, reply: Any, scope: Counters | None
) -> tuple[Any, FirstLease | None]:
    """What the first read of a cache-aside call found (:func:`first_read`, serving stale), and what the lease
    asked for with it answered (None: none asked for, or the read failed)."""
    lease = None
    if ask is not None:
        reply, lease = lease_answer(ctx, plan, ask, reply)
    return first_read(ctx, plan, reply, scope, True), lease


def first_command(ctx: Context, site: Site, plan: ReadPlan) -> tuple[Command, LeaseRead | None]:
    """What the first read of a call from ``site`` sends for ``plan`` (the call's own plan): ``(the command, the
    lease read or None)``: the plan's ``MGET``, or the read that takes the lease with it when a miss is likely
    (:mod:`cachewise.engine.firstread`)."""
    odds = ctx.odds
    if odds.quiet or not site.protection.single_flight or not odds.likely(plan.group):
        return plan.mget or plan.command, None
    ask = lease_read(ctx, site, plan)
    return ask.command, ask


def settle(ctx: Context, protection: Protection, found: Found, lease: FirstLease | None = None) -> str | None:
    """What a cache-aside call has left to do after its first read (and the share of misses it counts towards):
    None, nothing (``found[0]`` is the answer: a fresh hit); ``"release"``, give back the lease its read took for
    a fresh hit; ``"early"`` / ``"stale"``, refresh a hit; ``"corrupt"``, reload a hit whose times are unreadable;
    ``"failed"``, load without the cache (the server did not answer); ``"miss"``, load or wait."""
    value, head = found[0], found[1]
    odds = ctx.odds
    if value is MISSING:
        if head is FAILED:
            return "failed"
        odds.observe(found[2].group, True)
        return "miss"
    if not odds.quiet:  # quiet: a hit changes nothing
        odds.observe(found[2].group, False)
    why = ctx.reader.refresh_due(head, protection) if head else None
    if why is None and lease is not None and lease.answer.kind == "granted":
        return "release"
    return why


def after_read(ctx: Context, req: Request, found: Found, lease: FirstLease | None = None) -> Flow[Any] | None:
    """What remains after the first read of a cache-aside call (:func:`settle`): None for a fresh hit (return its
    value), else the flow that does it (:func:`reload`).  ``lease``: what the lease asked for with the read
    answered (a lease granted for a hit is given back)."""
    why = settle(ctx, req.protection, found, lease)
    return None if why is None else reload(ctx, req, found, lease, why)


def reload(ctx: Context, req: Request, found: Found, lease: FirstLease | None, why: str) -> Flow[Any]:
    """The flow of what :func:`settle` said remains (``why``): reload a miss (with single flight: one caller loads,
    the others wait) or a hit due for an early or a stale refresh; give back a lease taken for a hit; or, when the
    server did not answer, load without the cache (no lease, no store, no second timeout)."""
    value, head, plan, reply = found
    if why == "release":
        assert lease is not None
        return _give_back(ctx, req, lease.token, value)
    if why == "early" or why == "stale":
        return _refresh(ctx, req, value, head, why, _known(ctx, req, plan, reply), lease)
    if why == "failed":
        return _load(ctx, req, None)
    if why == "corrupt":
        ctx.reader.invalid(req.scope, "corrupt entry times")
    if not req.protection.single_flight:
        return _load(ctx, req, "", stamps=_known(ctx, req, plan, reply))
    return _single_flight(ctx, req, _known(ctx, req, plan, reply), lease)


def _give_back(ctx: Context, req: Request, token: str, value: Any) -> Flow[Any]:
    """Return ``value``, a hit that the first read's lease was taken for (the counters this process remembered were
    out of date), after giving the lease back."""
    yield from _release(ctx, req, token, skip=False)
    return value


def _known(ctx: Context, req: Request, plan: ReadPlan, reply: Any) -> list[Any]:
    """The values of ``req``'s counters that the read of ``plan`` saw (None: unknown, or the read failed)."""
    if plan.tokens == req.tokens:  # nearly always: the plan read the request's own counters
        return list(reply[1:]) if reply else [None] * len(plan.counters)
    seen = dict(zip(plan.counters, reply[1:])) if reply else {}
    return [seen.get(c) for c in ctx.read_plan(req.key, req.tokens).counters]


def _lease(ctx: Context, req: Request, plan: ReadPlan, lease_ms: int, command: Command, known: list[Any]) -> Flow[Any]:
    """Send the lease request ``command``; ``(the counter values it is taken under, its reply)``.  It goes behind
    ``counters.lua`` (their values now, kept alive for the lease's time) unless this process knows that they hold the
    values ``known`` (this call read them) and live that long: then it goes alone, under those values (a counter
    bumped since makes the value stale, and its write refused)."""
    memo = ctx.writer.memo
    if memo.alive(plan.counters, known, lease_ms):
        return tuple(known), (yield Send(command, req.scope))
    counters = commands.counters(plan.counters, lease_ms, commands.fresh_value())
    since = time.monotonic()
    (values, lives), reply = yield Send(Command.join("acquire", [counters, command]), req.scope)
    memo.learn(plan.counters, values, lives, since)
    return tuple(values), reply


def _counters(ctx: Context, req: Request, plan: ReadPlan, lease_ms: int) -> Flow[list[Any]]:
    """The values of ``plan``'s counters now (``counters.lua``: a missing one is created), kept alive for the lease's
    time and learned by the memo."""
    since = time.monotonic()
    values, lives = yield Send(commands.counters(plan.counters, lease_ms, commands.fresh_value()), req.scope)
    ctx.writer.memo.learn(plan.counters, values, lives, since)
    return list(values)


def _refresh(
    ctx: Context,
    req: Request,
    value: Any,
    head: list[bytes],
    why: str,
    known: list[Any],
    first: FirstLease | None = None,
) -> Flow[Any]:
    """A hit that should be reloaded (early, or served stale): one caller takes the lease and reloads (unless the
    entry it read was replaced meanwhile: another caller's refresh landed).  ``known``: the counters' values the
    read saw; ``first``: the lease the read asked for, if it did."""
    plan = ctx.read_plan(req.key, req.tokens)
    if first is not None:  # the read asked already: the lease is ours, or someone else is reloading
        kind, token, lease_ms, snapshot = first.answer.kind, first.token, first.lease_ms, tuple(known)
    else:
        lease_ms = ctx.lease_ms(req)
        token = new_token()
        seen_written = head[2] if len(head) > 2 else b""
        command = commands.acquire(ctx.space, req.key, token, lease_ms, refresh=True, seen_written=seen_written)
        try:
            snapshot, reply = yield from _lease(ctx, req, plan, lease_ms, command, known)
        except SERVER_ERRORS:
            reply = None
        kind = commands.lease_reply(reply).kind
    if kind != "granted":  # someone else is reloading it (or the server failed)
        if why == "stale":
            ctx.stats.add(req.scope, "stale_served")
        return value
    ctx.stats.add(req.scope, "stale_served" if why == "stale" and req.background else "early_refreshes")
    load = _load(ctx, req, token, lease_ms=lease_ms, stamps=snapshot)
    if req.background:
        yield Spawn(load)
        return value
    return (yield from load)


def _single_flight(ctx: Context, req: Request, known: list[Any], first: FirstLease | None = None) -> Flow[Any]:
    """A miss: follow another caller of this process that is loading the key, or take the lease and load, or wait
    to be told the value is there.  ``first``: what the lease asked for with the read answered."""
    scope, stats, reader = req.scope, ctx.stats, ctx.reader
    plan = ctx.read_plan(req.key, req.tokens)
    if first is not None and first.answer.kind != "wait":
        return (yield from _first_lease(ctx, req, plan, known, first))
    lease_ms = ctx.lease_ms(req) if first is None else first.lease_ms
    deadline = time.monotonic() + req.protection.wait_budget(lease_ms)
    joined: Joined = yield Join(plan.entry, deadline - time.monotonic())
    waited = not joined.lead  # counted once per read, however many rounds it takes
    if waited:  # another caller here was loading it: take its stored value, or read the key once
        stats.add(scope, "waits")
        if joined.payload is not None:
            found = reader.shared(plan.entry, joined.payload, scope)
        else:
            found = yield from _reread(ctx, req, plan)
        if found is not MISSING:
            return found
        first = None  # that caller is done: whatever the read was told is out of date
    expected = known
    if None in expected:
        # A counter this call's read did not find (a cold namespace or tag): learn the values it has now, so that an
        # entry another caller stored meanwhile, stamped with them, is taken as filled rather than loaded again.
        try:
            expected = yield from _counters(ctx, req, plan, lease_ms)
        except SERVER_ERRORS:
            return (yield from _load(ctx, req, None))
    listening = False
    while True:
        token = new_token()
        if first is not None:  # the read was told to wait already
            lease, snapshot, since, first = first.answer, tuple(expected), first.since, None
        else:
            since = time.monotonic()
            command = commands.acquire(ctx.space, req.key, token, lease_ms, tag_tokens=req.tokens, expected=expected)
            try:
                snapshot, reply = yield from _lease(ctx, req, plan, lease_ms, command, expected)
            except SERVER_ERRORS:
                return (yield from _load(ctx, req, None))
            lease = commands.lease_reply(reply)
        if lease.kind == "filled" and lease.raw is not None:  # filled meanwhile
            found = reader.filled(plan.entry, lease.raw, scope)
            if found is not MISSING:
                yield Share(plan.entry, payload_of(lease.raw)[1], since)
                return found
            return (yield from _load(ctx, req, "", stamps=snapshot))  # unreadable: replace it
        if lease.kind == "granted":
            return (yield from _load(ctx, req, token, lease_ms=lease_ms, stamps=snapshot))
        if lease.kind == "skip":  # too large to cache: everyone loads, nobody waits
            return (yield from _load(ctx, req, None))
        expected = list(snapshot)
        left = deadline - time.monotonic()
        if left <= 0:  # the holders keep failing or hanging: load for ourselves, and do not store
            stats.add(scope, "wait_timeouts")
            return (yield from _load(ctx, req, None))
        if not waited:
            stats.add(scope, "waits")
            waited = True
        if not listening:
            # First wait of this cache: subscribe now (not before the lease: the holder must not pay for it), then
            # read once more, since the value may have landed while we were subscribing.
            listening = yield Listen(plan.entry)
        else:
            yield Wait(plan.entry, min(lease.holder_ms / 1000 + 0.05, left), since)
        found = yield from _reread(ctx, req, plan)
        if found is not MISSING:
            return found
        if not listening:
            yield Wait(plan.entry, min(0.05, left), since)  # no notifications: short, bounded waits


def _first_lease(ctx: Context, req: Request, plan: ReadPlan, known: list[Any], first: FirstLease) -> Flow[Any]:
    """A miss whose read took the lease (load under it, leading this process's callers of the key unless one of
    them leads already: it waits for this load's fill), or was told that the value is too large to cache."""
    if first.answer.kind != "granted":  # "skip": everyone loads, nobody waits
        return (yield from _load(ctx, req, None))
    yield Join(plan.entry, 0.0, holder=True)
    stamps = known
    if None in stamps:  # a counter the read did not find: stamp with the values it is created with now
        try:
            stamps = yield from _counters(ctx, req, plan, first.lease_ms)
        except SERVER_ERRORS:
            yield from _release(ctx, req, first.token, skip=False)
            return (yield from _load(ctx, req, None))
    return (yield from _load(ctx, req, first.token, lease_ms=first.lease_ms, stamps=stamps))


def _reread(ctx: Context, req: Request, plan: ReadPlan) -> Flow[Any]:
    """Read the key again after waiting: its value, or MISSING (not counted as another hit or miss).  What this
    read saw is shared with the callers of this process that joined before it was sent."""
    sent_at = time.monotonic()
    try:
        reply = yield Send(plan.command)
    except SERVER_ERRORS:
        return MISSING
    found = ctx.reader.peek(plan, reply)
    if found is not MISSING:  # the followers of this caller in this process may take it too
        yield Share(plan.entry, payload_of(reply[0])[1], sent_at)
    return found


def _load(ctx: Context, req: Request, token: str | None, *, lease_ms: int = 0, stamps: Any = ()) -> Flow[Any]:
    """Run the loader and store its value: under ``token`` (a lease of ``lease_ms``, kept alive while the loader
    runs), plainly (``""``), or not at all (None).  ``stamps``: the counter values to stamp it with (the lease's, or
    those last seen; None for one unknown)."""
    scope, plan = req.scope, ctx.read_plan(req.key, req.tokens)
    started = time.perf_counter()
    hold = None
    if token and lease_ms:
        hold = Hold(req.key, token, lease_ms, req.protection.wait_budget(lease_ms), plan.counters, tuple(stamps))
    try:
        value = yield Load(hold)
        encoded = None if token is None else ctx.writer.encode(req.key, value, req.ttl, req.jitter, req.where)
    except GeneratorExit:
        raise
    except BaseException:
        if token:  # give the lease back at once, so that a waiter takes over
            yield from _release(ctx, req, token, skip=False)
        raise
    seconds = time.perf_counter() - started
    ctx.loaded(req, seconds, leased=bool(token))
    if encoded is None:
        if token:  # too large to cache: let the waiters load for themselves rather than wait
            yield from _release(ctx, req, token, skip=True)
        return value
    if not stamps or None in stamps:  # a counter nobody saw: stamped with the value its creation will give it
        fresh = commands.fresh_value()
        stamped = [fresh if s is None else s for s in stamps] if stamps else [fresh] * len(plan.counters)
    else:
        fresh, stamped = "", list(stamps)
    grace_ms = int(req.protection.stale_ttl * 1000)
    load_ms, token = int(seconds * 1000), token or ""
    write = ctx.writer.command(
        plan, encoded, stamped, fresh, verify=bool(token), grace_ms=grace_ms, load_ms=load_ms, token=token
    )
    sent_at = time.monotonic()
    try:
        reply = yield Send(write.command, scope)
    except SERVER_ERRORS:
        return value
    result = ctx.writer.result(write, reply, plan, sent_at)
    ctx.stats.add(scope, "sets" if result.stored else "refused_writes")
    if result.stored and token:
        yield Share(plan.entry, encoded.payload, sent_at)
    return value


def _release(ctx: Context, req: Request, token: str, *, skip: bool) -> Flow[None]:
    with contextlib.suppress(*SERVER_ERRORS):  # the lease expires by itself
        yield Send(commands.release(ctx.space, req.key, token, skip=skip), req.scope)
