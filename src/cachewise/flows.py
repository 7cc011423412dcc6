"""Cache-aside past the first read, written once for sync and async code.

A flow is a generator that makes every decision and *yields* each piece of I/O as a step; the cache's sync driver
runs a step with the sync client, its async driver with the asyncio client, and sends the result back (or throws
the exception in).  So leases, waiting, early refresh and stale serving exist once, as in ``h11``/``httpcore``.

Steps (``(kind, *args)``):

* ``(MGET, keys)`` → the reply list;  ``(SCRIPT, call)`` → the script's reply;
* ``(LOAD, lease)`` → the loader's value (its exception is thrown in); ``lease`` is ``(key, tag tokens, token,
  lease_ms, the waiters' budget in s)`` when the load holds a lease, kept alive while the loader runs (for at most
  that budget: :mod:`cachewise.lease_keeper`), else None;
* ``(JOIN, entry key, timeout)`` → after waiting for another caller of this process that was loading the same key,
  its stored payload (bytes) when this caller may take it, else True; False when this caller now leads the key
  (the driver ends the lead when the flow ends);
* ``(SHARE, entry key, payload, sent at)`` → nothing: a payload this caller stored under its lease, or read, with
  the time that write or read was sent, for the callers of this process that follow it;
* ``(LISTEN,)`` → whether fill notifications are flowing (subscribes on first use);
* ``(WAIT, entry key, timeout, since)`` → True when woken by a fill of that key;
* ``(SPAWN, flow)`` → run another flow in the background (async only).

The hit path never enters a flow: the cache returns a fresh hit itself, after one ``MGET``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import store
from .envelope import payload_of
from .failures import SERVER_ERRORS
from .stampede import Protection, new_token
from .ttl import TTLLike

if TYPE_CHECKING:
    from .cache import Cache
    from .stats import Counters

__all__ = ["JOIN", "LISTEN", "LOAD", "MGET", "SCRIPT", "SHARE", "SPAWN", "WAIT", "Flow", "Request", "after_read"]

MGET, SCRIPT, LOAD, JOIN, SHARE = "mget", "script", "load", "join", "share"
LISTEN, WAIT, SPAWN = "listen", "wait", "spawn"

Flow = Generator[tuple[Any, ...], Any, Any]


@dataclass
class Request:
    """One cache-aside call: what to read, how to store, how to protect the origin."""

    key: str
    tokens: tuple[str, ...]
    ttl: TTLLike | None
    jitter: float | None
    scope: Counters | None
    where: str
    protection: Protection
    #: Refresh in the background (async code) rather than in the caller.
    background: bool = False


def after_read(
    cache: Cache, req: Request, value: Any, head: list[bytes], refresh: str | None, *, server_down: bool = False
) -> Flow:
    """Continue a read-through after its first read: ``value`` is the hit (``refresh`` says why it needs one:
    ``"early"`` or ``"stale"``) or :data:`~cachewise.MISSING`.  When the read failed (``server_down``), load without
    the cache: no lease, no store, no second timeout."""
    from .cache import MISSING

    if server_down:
        return (yield from _load(cache, req, token=None))
    if value is not MISSING:
        return (yield from _refresh(cache, req, value, head, refresh))
    if not req.protection.single_flight:
        return (yield from _load(cache, req, token=""))
    return (yield from _single_flight(cache, req))


def _refresh(cache: Cache, req: Request, value: Any, head: list[bytes], why: str | None) -> Flow:
    """A hit that should be reloaded (early, or served stale): one caller takes the lease and reloads (unless the
    entry it read was replaced meanwhile: another caller's refresh landed)."""
    stats, scope = cache._stats, req.scope
    lease_ms = cache._lease_ms(req)
    token = new_token()
    seen = head[2] if len(head) > 2 else b""
    try:
        call = store.acquire(cache.keyspace, req.key, req.tokens, token, lease_ms, refresh=True, seen_written=seen)
        granted = yield (SCRIPT, call)
    except SERVER_ERRORS as exc:
        cache._failed("acquire", exc, scope)
        granted = None
    if not granted:  # someone else is reloading it
        if why == "stale":
            stats.add(scope, "stale_served")
        return value
    stats.add(scope, "stale_served" if why == "stale" and req.background else "early_refreshes")
    if req.background:
        yield (SPAWN, _load(cache, req, token=token, lease_ms=lease_ms))
        return value
    return (yield from _load(cache, req, token=token, lease_ms=lease_ms))


def _single_flight(cache: Cache, req: Request) -> Flow:
    """A miss: follow another caller of this process that is loading the key, or take the lease and load, or wait
    to be told the value is there."""
    from .cache import MISSING

    space, scope, stats = cache.keyspace, req.scope, cache._stats
    lease_ms = cache._lease_ms(req)
    deadline = time.monotonic() + req.protection.wait_budget(lease_ms)
    entry = space.entry(req.key)
    keys = cache._read_keys(req.key, req.tokens)
    joined = yield (JOIN, entry, deadline - time.monotonic())
    if joined:  # another caller here was loading it: take its stored value, or read the key once
        stats.add(scope, "waits")
        if isinstance(joined, bytes):
            found = cache._shared(req.key, joined, scope)
        else:
            found = yield from _reread(cache, req, keys)
        if found is not MISSING:
            return found
    listening = False
    while True:
        token = new_token()
        since = time.monotonic()
        try:
            reply = yield (SCRIPT, store.acquire(space, req.key, req.tokens, token, lease_ms))
        except SERVER_ERRORS as exc:
            cache._failed("acquire", exc, scope)
            return (yield from _load(cache, req, token=None))
        if isinstance(reply, bytes):  # filled meanwhile
            found = cache._validated(req.key, reply, scope)
            if found is not MISSING:
                yield (SHARE, entry, payload_of(reply)[1], since)
                return found
            return (yield from _load(cache, req, token=""))  # unreadable: replace it
        if reply[0] == b"L":
            return (yield from _load(cache, req, token=token, lease_ms=lease_ms))
        if reply[0] == b"S":  # too large to cache: everyone loads, nobody waits
            return (yield from _load(cache, req, token=None))
        left = deadline - time.monotonic()
        if left <= 0:  # the holders keep failing or hanging: load for ourselves, and do not store
            stats.add(scope, "wait_timeouts")
            return (yield from _load(cache, req, token=None))
        stats.add(scope, "waits")
        if not listening:
            # First wait of this cache: subscribe now (not before the lease: the holder must not pay for it), then
            # read once more, since the value may have landed while we were subscribing.
            listening = yield (LISTEN,)
        else:
            holder_left = int(reply[1]) / 1000 + 0.05
            yield (WAIT, entry, min(holder_left, left), since)
        found = yield from _reread(cache, req, keys)
        if found is not MISSING:
            return found
        if not listening:
            yield (WAIT, entry, min(0.05, left), since)  # no notifications: short, bounded waits


def _reread(cache: Cache, req: Request, keys: list[str]) -> Flow:
    """Read the key again after waiting: its value, or MISSING (not counted as another hit or miss).  What this
    read saw is shared with the callers of this process that joined before it was sent."""
    from .cache import MISSING

    sent_at = time.monotonic()
    try:
        reread = yield (MGET, keys)
    except SERVER_ERRORS as exc:
        cache._failed("read", exc, req.scope)
        return MISSING
    found = cache._peek(keys, reread, req.tokens)
    if found is not MISSING:  # the followers of this caller in this process may take it too
        yield (SHARE, keys[0], payload_of(reread[0])[1], sent_at)
    return found


def _load(cache: Cache, req: Request, token: str | None, lease_ms: int = 0) -> Flow:
    """Run the loader and store its value: under ``token`` (a lease of ``lease_ms``, kept alive while the loader
    runs), plainly (``""``), or not at all (None)."""
    scope = req.scope
    started = time.perf_counter()
    try:
        lease = (
            (req.key, req.tokens, token, lease_ms, req.protection.wait_budget(lease_ms)) if token and lease_ms else None
        )
        value = yield (LOAD, lease)
        call = None
        if token is not None:
            seconds = time.perf_counter() - started
            call = cache._write_call(
                req.key,
                value,
                req.ttl,
                req.tokens,
                req.jitter,
                req.where,
                grace=req.protection.stale_ttl,
                load_ms=int(seconds * 1000),
                token=token,
            )
    except GeneratorExit:
        raise
    except BaseException:
        if token:  # give the lease back at once, so that a waiter takes over
            try:
                yield (SCRIPT, store.release(cache.keyspace, req.key, token))
            except SERVER_ERRORS as exc:
                cache._failed("release", exc, scope)
        raise
    seconds = time.perf_counter() - started
    cache._loaded(req, seconds, leased=bool(token))
    if call is None and token:  # too large to cache: let the waiters load for themselves rather than wait
        try:
            yield (SCRIPT, store.release(cache.keyspace, req.key, token, skip=True))
        except SERVER_ERRORS as exc:
            cache._failed("release", exc, scope)
    if call is not None:
        sent_at = time.monotonic()
        try:
            result = yield (SCRIPT, call)
        except SERVER_ERRORS as exc:
            cache._failed("write", exc, scope)
        else:
            cache._stats.add(scope, "sets" if result == 1 else "refused_writes")
            if result == 1 and token:
                yield (SHARE, call.keys[0], store.payload_of_write(call), sent_at)
    return value
