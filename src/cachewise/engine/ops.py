"""The cache's other operations as flows (see :mod:`cachewise.runner`): a plain write, a delete, a version bump or
tag invalidation, a TTL, and clearing a namespace.  Written once; :class:`~cachewise.Cache` runs each with its sync
or asyncio client.

Writes fail open (a server error: not stored, False).  Invalidations that do not reach the server raise
:class:`~cachewise.errors.InvalidationError`: a lost invalidation means stale data, so it must not pass silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..entries import commands
from ..errors import InvalidationError
from ..failures import SERVER_ERRORS
from ..runner import Flow, Send
from ..stats import Counters
from ..transport.command import Command
from ..ttl import TTLLike
from .context import Context
from .stampede import new_token

__all__ = ["bump", "clear", "delete", "not_done", "ttl", "write"]


def not_done(what: str, exc: BaseException) -> InvalidationError:
    """The error of an invalidation that did not reach the server."""
    return InvalidationError(
        f"{what} did not reach the server ({type(exc).__name__}: {exc}); the cache may serve the old value until "
        "its TTL ends: retry the invalidation"
    )


def write(
    ctx: Context,
    key: str,
    value: Any,
    ttl: TTLLike | None,
    tokens: tuple[str, ...],
    jitter: float | None,
    where: str,
    *,
    version: int | None = None,
    grace: float | None = None,
    scope: Counters | None = None,
) -> Flow[bool]:
    """Store ``value`` (write-through), voiding any load of ``key`` in flight; True when stored.  Stamped with the
    counter values this process saw last: when one moved since (another process bumped it), the reply says so and
    the value is written once more with the right ones.  ``grace``: seconds to keep it past its TTL to be served
    stale (default: the cache's ``stale_ttl``)."""
    encoded = ctx.writer.encode(key, value, ttl, jitter, where)  # raises for misuse, before any I/O
    if encoded is None:
        return False
    plan = ctx.read_plan(key, tokens)
    memo, fresh = ctx.writer.memo, commands.fresh_value()
    stamps: Sequence[Any] = memo.stamps(plan.counters, fresh)
    write_id = new_token() if version is not None else ""
    grace_ms = int((ctx.protection.stale_ttl if grace is None else grace) * 1000)
    replaces = ""
    try:
        for _ in range(2):
            write = ctx.writer.command(
                plan, encoded, stamps, fresh, grace_ms=grace_ms, version=version, write_id=write_id, replaces=replaces
            )
            since = time.monotonic()
            result = ctx.writer.result(write, (yield Send(write.command, scope)), plan, since)
            if result.status != 1 or not result.stale:
                break
            # Stale stamps: again with the counters' values; one found missing (evicted, or the server restarted
            # empty) is created afresh by the next write's counters.lua.
            stamps = [fresh if value is None else value for value in result.current]
            replaces = write_id
    except SERVER_ERRORS:
        ctx.forget([plan.entry])  # it may have been written before the reply was lost
        return False
    ctx.forget([plan.entry])
    ctx.stats.add(scope, "sets" if result.stored else "refused_writes")
    return result.stored


def _invalidation(command: Command, what: str) -> Flow[Any]:
    """Send an invalidation; its reply, or :class:`InvalidationError` when it did not reach the server."""
    try:
        return (yield Send(command))
    except SERVER_ERRORS as exc:
        raise not_done(what, exc) from exc


def delete(ctx: Context, key: str, what: str) -> Flow[bool]:
    """Remove ``key`` and void any load of it in flight; True when it existed."""
    entry = ctx.space.entry(key)
    try:
        removed = yield from _invalidation(commands.delete(ctx.space, key), what)
    finally:
        ctx.forget([entry])
    ctx.stats.add(None, "deletes")
    return bool(removed)


def bump(ctx: Context, counters: Sequence[str], what: str) -> Flow[int]:
    """Increment version or tag counters; how many of them were in use."""
    try:
        replies = yield from _invalidation(commands.bump(counters, what), what)
    finally:
        ctx.forget(list(counters))
    return int(sum(replies)) if isinstance(replies, list) else int(replies)


def ttl(ctx: Context, key: str) -> Flow[float | None]:
    """Seconds until ``key`` expires on the server; None when it is not there (or the server is not)."""
    entry = ctx.space.entry(key)
    try:
        left = yield Send(Command.plain("ttl", "PTTL", entry, keys=[entry]))
    except SERVER_ERRORS:
        return None
    return left / 1000 if left >= 0 else None


def clear(ctx: Context, batch: int = 500) -> Flow[int]:
    """Delete every key of the namespace (SCAN + UNLINK in batches); how many were deleted."""
    deleted, cursor = 0, b"0"
    if ctx.local is not None:
        ctx.local.flush()
    try:
        while True:
            cursor, found = yield Send(
                Command.plain("clear", "SCAN", cursor, "MATCH", ctx.space.pattern, "COUNT", 1000)
            )
            for keys in _batches(ctx, found, batch):
                names = [k.decode(errors="replace") for k in keys]
                deleted += int((yield Send(Command.plain("clear", "UNLINK", *keys, keys=names))))
            if int(cursor) == 0:
                if ctx.local is not None:  # a fill that read before an UNLINK: gone too
                    ctx.local.flush()
                return deleted
    except SERVER_ERRORS as exc:
        raise InvalidationError(f"clear() did not finish ({type(exc).__name__}: {exc}): retry") from exc


def _batches(ctx: Context, keys: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        if not ctx.space.owns(key.decode(errors="replace")):  # never touch another namespace
            continue
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
