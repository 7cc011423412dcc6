"""The first read of a cache-aside call, without I/O: the plain ``MGET`` of the hit path, or — when the recent calls
of the key's group mostly missed — a read that takes the lease in the same round trip, so that a miss costs two round
trips (read and lease, then write) instead of three (read, lease, write).

The lease read is ``acquire.lua`` in its ``read`` mode (``commands.acquire(..., first=True)``), judged by the
server against the counter values this process last saw (:class:`~cachewise.engine.writes.StampMemo`), sent in one
write after the counters' own read (an ``MGET``, or ``counters.lua`` when they are not known to live through the
lease).  The client still judges the
entry against the counter values read beside it, exactly as after a plain read, so a memory that is out of date
costs a round trip (a lease given back, or asked for again), never a wrong answer.

Which read to send is a guess (:class:`~cachewise.engine.stampede.MissOdds`): the script costs the server a few
µs more than an ``MGET`` (measured: ~6 µs against ~1.5 µs), which a hit should not pay when misses are rare, and
saves a whole round trip on a miss.  The break-even is a miss rate of a few per cent; the guess switches at 1 in 8.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..entries import commands
from ..entries.commands import LeaseReply
from ..executor import Failed
from ..transport.command import Command
from .context import Context, Site
from .reads import ReadPlan
from .stampede import new_token

__all__ = ["FirstLease", "LeaseRead", "lease_answer", "lease_read"]


# Never changed once built; not ``frozen``, which is several times slower to build, and this is built per miss.
@dataclass(slots=True)
class LeaseRead:
    """A first read that takes the lease: its command, the lease's token and TTL, whether the counters' part is
    ``counters.lua`` (``keep``: values and lives) or an ``MGET``, and when it was built (``time.monotonic()``)."""

    command: Command
    token: str
    lease_ms: int
    keep: bool
    since: float


# Never changed once built; not ``frozen``, which is several times slower to build, and this is built per miss.
@dataclass(slots=True)
class FirstLease:
    """What the lease part of a first read answered (``answer``: granted, wait or skip) for the lease of ``token``,
    ``lease_ms`` long, asked at ``since``."""

    token: str
    lease_ms: int
    since: float
    answer: LeaseReply


def lease_read(ctx: Context, site: Site, plan: ReadPlan) -> LeaseRead:
    """The first read of ``plan`` (a call's own plan), from ``site``, that takes the lease on a miss (the caller
    decided that a miss is likely, and that the call uses single flight)."""
    memo = ctx.writer.memo
    lease_ms = ctx.lease_ms(site)
    expected = memo.stamps(plan.counters, "")
    token = new_token()
    lease = commands.acquire(
        ctx.space, plan.key, token, lease_ms, tag_tokens=plan.tokens, expected=expected, first=True
    )
    keep = not memo.alive(plan.counters, expected, lease_ms)
    counters = commands.counters(plan.counters, lease_ms, commands.fresh_value()) if keep else plan.read_counters
    return LeaseRead(Command.join("read", [counters, lease]), token, lease_ms, keep, time.monotonic())


def lease_answer(ctx: Context, plan: ReadPlan, sent: LeaseRead, reply: Any) -> tuple[Any, FirstLease | None]:
    """The reply of ``sent`` in the shape of a plain read's (the entry, then the counters' values), and what its
    lease part answered (None: no lease asked for, or the read failed).  The counters' values go to the memo."""
    if type(reply) is Failed:
        return reply, None
    counted, answered = reply
    memo = ctx.writer.memo
    if sent.keep:
        values, lives = counted
        memo.learn(plan.counters, values, lives, sent.since)
    else:
        values = counted
        memo.learn(plan.counters, values)
    raw, answer = commands.first_reply(answered)
    lease = None if answer is None else FirstLease(sent.token, sent.lease_ms, sent.since, answer)
    return [raw, *values], lease
