"""The entry protocol's server calls, without I/O: each a ready :class:`~cachewise.transport.command.Command`.

Two kinds of keys, kept apart so that a Cluster can spread a namespace over every primary:

* **an entry and its lease** share one hash slot (:meth:`~cachewise.keyspace.KeySpace.lease`); every entry script
  (``acquire.lua``, ``set.lua``, ``extend.lua``, ``release.lua``, ``delete.lua``) touches those two keys only;
* **counters** (namespace version, group versions, tags) each live in their own slot; ``counters.lua`` reads them,
  creates the missing ones and keeps them alive, and ``bump.lua`` increments one.  A command that needs both kinds
  is several parts sent in one write (one round trip on one server; one per node, in parallel, on a Cluster).

So no script reads a counter: an entry is *stamped* with counter values the client read (in the same round trip as
the lease it loads under, or in the first read of a call), and every reader compares the stamps with the counters'
values it reads with the entry (:func:`~cachewise.entries.verdicts.judge`).  A counter that moves between the
client's read and the write makes the write a miss for every reader: it can waste a write, never serve a stale value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..keyspace import KeySpace
from ..transport.command import Command
from ..transport.scripts import Script
from ..uniques import counter_value
from .verdicts import MAX_TAGS

__all__ = [
    "ACQUIRE",
    "BUMP",
    "COUNTERS",
    "DELETE",
    "EXTEND",
    "RELEASE",
    "SET",
    "LeaseReply",
    "acquire",
    "bump",
    "counter_keys",
    "counters",
    "delete",
    "extend",
    "first_reply",
    "fresh_value",
    "lease_reply",
    "read",
    "read_keys",
    "release",
    "write",
]

_PRELUDE = "entry.lua"
ACQUIRE = Script.beside(__package__ or __name__, "acquire.lua", prelude=_PRELUDE)
SET = Script.beside(__package__ or __name__, "set.lua", prelude=_PRELUDE)
EXTEND = Script.beside(__package__ or __name__, "extend.lua", prelude=_PRELUDE)
RELEASE = Script.beside(__package__ or __name__, "release.lua", prelude=_PRELUDE)
DELETE = Script.beside(__package__ or __name__, "delete.lua", prelude=_PRELUDE)
COUNTERS = Script.beside(__package__ or __name__, "counters.lua", per_key="columns")
BUMP = Script.beside(__package__ or __name__, "bump.lua")

#: A counter value as a stamp: bytes as the server answered, a str we chose, or None (the counter was missing).
Stamp = bytes | str | None


def _arg(stamp: Stamp) -> bytes | str:
    return b"" if stamp is None else stamp


# -- reads ----------------------------------------------------------------------------------------------------------
def counter_keys(space: KeySpace, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
    """The counters an entry of ``key`` is stamped with: namespace version, group version, one per tag."""
    return [space.namespace_version, space.group_version(space.group_of(key)), *map(space.tag_counter, tag_tokens)]


def read_keys(space: KeySpace, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
    """The keys one read fetches for ``key``: the entry, then its counters (:func:`counter_keys`)."""
    return [space.entry(key), *counter_keys(space, key, tag_tokens)]


def read(space: KeySpace, key: str, tag_tokens: tuple[str, ...] = ()) -> Command:
    """The ``MGET`` of :func:`read_keys` (the entry and its counters' values, in one reply)."""
    keys = read_keys(space, key, tag_tokens)
    return Command.plain("read", "MGET", *keys, keys=keys)


def fresh_value() -> str:
    """The value of a counter created now (:func:`cachewise.uniques.counter_value`): random, so that no earlier
    incarnation of it can have had it (an entry stamped with an old value then never becomes valid again)."""
    return counter_value()


def counters(keys: Sequence[str], life_ms: int, fresh: str) -> Command:
    """Read ``keys`` (counters), creating the missing ones with the value ``fresh`` and keeping each alive at least
    ``life_ms``: the reply is their values, in order."""
    return Command.script("counters", COUNTERS, keys, [life_ms, fresh])


# -- leases ---------------------------------------------------------------------------------------------------------
def acquire(
    space: KeySpace,
    key: str,
    token: str,
    lease_ms: int,
    *,
    tag_tokens: tuple[str, ...] = (),
    expected: Sequence[Stamp] = (),
    refresh: bool = False,
    seen_written: bytes = b"",
    first: bool = False,
) -> Command:
    """Take ``key``'s lease after a miss, unless the entry is there by now, stamped with the ``expected`` counter
    values (the namespace's, the group's, then one per tag of ``tag_tokens``, as the caller read them).  With
    ``refresh``: take it to refresh a valid entry early, only while the entry is still the one written at
    ``seen_written`` (the header's write time the caller read).  With ``first``: the first read of a call that
    expects a miss (:func:`first_reply` reads the answer)."""
    entry = space.entry(key)
    if refresh:
        args: list[Any] = [token, lease_ms, "refresh", seen_written]
    else:
        values = [_arg(v) for v in expected] or [b"", b""]
        args = [token, lease_ms, "read" if first else "miss", values[0], values[1]]
        for tag, value in zip(tag_tokens, values[2:]):
            args += (tag, value)
    return Command.script("acquire", ACQUIRE, [entry, space.lease(entry)], args)


@dataclass(frozen=True, slots=True)
class LeaseReply:
    """What ``acquire.lua`` answered.

    ``kind``: ``"filled"`` (the entry is valid by now: ``raw``), ``"granted"`` (the lease is ours), ``"wait"``
    (another caller holds it, for ``holder_ms`` more), ``"skip"`` (the last holder found the value too large to
    cache: load, do not store, do not wait) or ``"refused"`` (a refresh that is not needed).
    """

    kind: str
    raw: bytes | None = None
    holder_ms: int = 0


_GRANTED, _SKIP, _REFUSED = LeaseReply("granted"), LeaseReply("skip"), LeaseReply("refused")


def lease_reply(reply: Any) -> LeaseReply:
    """The typed form of ``acquire.lua``'s reply."""
    if isinstance(reply, bytes):
        return LeaseReply("filled", raw=reply)
    if not reply:
        return _REFUSED
    if reply[0] == b"L":
        return _GRANTED
    if reply[0] == b"S":
        return _SKIP
    return LeaseReply("wait", holder_ms=int(reply[1]))


def first_reply(reply: Any) -> tuple[bytes | None, LeaseReply | None]:
    """The entry that a ``first`` :func:`acquire` found (None: none), and the lease's answer (None: no lease was
    asked for, since the entry looked valid, or carries tags the caller did not name)."""
    raw = reply[0] or None
    if len(reply) == 1:
        return raw, None
    return raw, lease_reply(reply[1:])


def release(space: KeySpace, key: str, token: str, *, skip: bool = False) -> Command:
    """Give a lease back without a value, waking the waiters: the loader failed (one of them loads next), or
    ``skip``: the value is too large to cache (they all load for themselves, without waiting, until the lease's
    time is up)."""
    entry = space.entry(key)
    return Command.script(
        "release", RELEASE, [space.lease(entry)], [token, space.fill_channel_of(entry), entry, "skip" if skip else ""]
    )


def extend(space: KeySpace, key: str, token: str, lease_ms: int) -> Command:
    """Extend our lease on ``key`` to ``lease_ms`` from now, if it is still ours (the loader is still running)."""
    entry = space.entry(key)
    return Command.script("lease heartbeat", EXTEND, [space.lease(entry)], [token, lease_ms])


# -- writes and invalidations ---------------------------------------------------------------------------------------
def write(
    space: KeySpace,
    key: str,
    code: bytes,
    payload: bytes,
    ttl_ms: int,
    stamps: Sequence[Stamp],
    tag_tokens: tuple[str, ...] = (),
    *,
    grace_ms: int = 0,
    load_ms: int = 0,
    token: str = "",
    version: int | None = None,
    write_id: str = "",
    replaces: str = "",
) -> Command:
    """Store ``payload`` under ``key`` for ``ttl_ms`` (+ ``grace_ms`` to be served stale), stamped with ``stamps``:
    the values of :func:`counter_keys` (namespace, group, then one per tag of ``tag_tokens``).

    ``token``: the lease this write completes ('' for a plain write, which voids any outstanding lease).
    ``version``: keep an entry written with a newer or equal version instead, unless that entry carries the write id
    ``replaces`` (this call's own earlier write, stamped with values that turned out stale); ``write_id`` marks this
    write so.  The script returns 1 (stored), 0 (lease lost) or -2 (a newer version is stored).  Send it after
    :func:`counters` for the same keys with a life of at least ``ttl_ms + grace_ms``, so that the counters outlive
    the entry.
    """
    if len(tag_tokens) > MAX_TAGS:
        raise ValueError(f"an entry can have at most {MAX_TAGS} tags, got {len(tag_tokens)}")
    entry = space.entry(key)
    meta = f"w={write_id}" if write_id else ""
    args: list[Any] = [ttl_ms, grace_ms, code, load_ms, meta, payload, token, "" if version is None else version]
    args += (replaces, space.fill_channel_of(entry), _arg(stamps[0]), _arg(stamps[1]))
    for tag, stamp in zip(tag_tokens, stamps[2:]):
        args += (tag, _arg(stamp))
    return Command.script("write", SET, [entry, space.lease(entry)], args)


def delete(space: KeySpace, key: str) -> Command:
    """Delete ``key`` and void its outstanding lease."""
    entry = space.entry(key)
    return Command.script("delete", DELETE, [entry, space.lease(entry)], [space.fill_channel_of(entry)])


def bump(counters: Sequence[str], name: str) -> Command:
    """Increment version or tag counters (``bump_version``, ``invalidate_tags``): one script call per counter (each in
    its own slot), in one write; the replies are 1 for each counter that existed."""
    if not counters:
        raise ValueError("nothing to bump")
    return Command.join(name, [Command.script(name, BUMP, [c], []) for c in counters])
