"""The entry protocol on the server, without I/O: which keys a read fetches, what its reply means, and the script
calls that lease, write and invalidate.

A read is one ``MGET`` of the entry and the counters it may be stamped with (namespace version, group version, and
the tags the caller knows of); :func:`judge` compares the entry's stamps with them.  Only an entry carrying a tag the
caller did not name needs the Lua read (``get.lua``), which finds its tags' counters itself.  Writes and
invalidations are Lua scripts (``set.lua``, ``bump.lua``).  :class:`~cachewise.Cache` runs these with its sync or
asyncio client, so both paths share every decision and differ only in ``await``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..envelope import HEADER_START, MAGIC
from ..keyspace import KeySpace
from ..server.scripts import Script

__all__ = [
    "ACQUIRE",
    "BUMP",
    "DELETE",
    "EXTEND",
    "GET",
    "HIT",
    "INVALID",
    "MAX_TAGS",
    "MISS",
    "RECHECK",
    "RELEASE",
    "SET",
    "STALE",
    "Call",
    "acquire",
    "bump",
    "delete",
    "extend",
    "header_of",
    "judge",
    "payload_of_write",
    "read",
    "read_keys",
    "release",
    "times",
    "write",
]

GET = Script.beside(__name__, "get.lua", prelude="entry.lua")
ACQUIRE = Script.beside(__name__, "acquire.lua", prelude="entry.lua")
SET = Script.beside(__name__, "set.lua", prelude="entry.lua")
RELEASE = Script.beside(__name__, "release.lua")
EXTEND = Script.beside(__name__, "extend.lua")
DELETE = Script.beside(__name__, "delete.lua")
BUMP = Script.beside(__name__, "bump.lua")

#: Tags per entry; each costs a counter read on every hit.
MAX_TAGS = 32
#: Index of the tag count among the header's tokens (see ``entry.lua``).
_NTAGS = 6


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: run it as ``connection.script(call.script, call.keys, call.args)``."""

    script: Script
    keys: list[str]
    args: list[Any]


#: Verdicts of :func:`judge`.
HIT, MISS, STALE, INVALID, RECHECK = range(5)
_NO_HEAD: list[bytes] = []


def read_keys(space: KeySpace, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
    """The keys one ``MGET`` reads for ``key``: the entry, its version counters, and the named tags' counters."""
    keys = [space.entry(key), space.namespace_version, space.group_version(space.group_of(key))]
    if tag_tokens:
        keys.extend(space.tag_prefix + t for t in tag_tokens)
    return keys


def judge(reply: list[Any], tag_tokens: tuple[str, ...] = ()) -> tuple[int, int, list[bytes]]:
    """What an ``MGET`` from :func:`read_keys` found: ``(verdict, payload offset, header tokens)``.

    ``STALE``: a counter moved since the entry was written (a version bump or a tag invalidation).  ``INVALID``:
    bytes that are not an entry of ours.  ``RECHECK``: the entry has a tag the reader did not name; read it again
    with the Lua read (:func:`read`).  The header tokens of a hit give its times (:func:`times`).
    """
    raw = reply[0]
    if raw is None:
        return MISS, 0, _NO_HEAD
    if raw[:3] != MAGIC:
        return INVALID, 0, _NO_HEAD
    try:
        start = HEADER_START + int(raw[4:8], 16)
    except ValueError:
        return INVALID, 0, _NO_HEAD
    head = raw[HEADER_START:start].split(b" ")
    if start > len(raw) or len(head) <= _NTAGS:
        return INVALID, 0, _NO_HEAD
    if head[0] != reply[1] or head[1] != reply[2]:
        return STALE, 0, _NO_HEAD
    if head[_NTAGS] != b"0":
        try:
            ntags = int(head[_NTAGS])
            for i in range(_NTAGS + 1, _NTAGS + 1 + 2 * ntags, 2):
                token = head[i].decode()
                if token not in tag_tokens:
                    return RECHECK, 0, _NO_HEAD
                if reply[3 + tag_tokens.index(token)] != head[i + 1]:
                    return STALE, 0, _NO_HEAD
        except (ValueError, IndexError, UnicodeDecodeError):
            return INVALID, 0, _NO_HEAD
    return HIT, start, head


def header_of(raw: bytes) -> list[bytes]:
    """The header tokens of an entry the Lua side already validated."""
    return raw[HEADER_START : HEADER_START + int(raw[4:8], 16)].split(b" ")


_MAX_TIME = 2**53  # beyond this no time or duration in ms is real (and float arithmetic would lose it)


def times(head: list[bytes]) -> tuple[int, int, int, int] | None:
    """``(written at ms, ttl ms, grace ms, load time ms)`` of an entry's header tokens; None when they are not
    plausible numbers (a corrupt or foreign header)."""
    try:
        values = int(head[2]), int(head[3]), int(head[4]), int(head[5])
    except (ValueError, IndexError):
        return None
    if not all(0 <= v < _MAX_TIME for v in values):
        return None
    return values


def read(space: KeySpace, key: str) -> Call:
    """The Lua read: ``key``'s value if no counter it is stamped with (versions, any tag) has moved, else nil."""
    return Call(
        GET,
        [space.entry(key), space.namespace_version, space.group_version(space.group_of(key))],
        [space.tag_prefix],
    )


def _entry_keys(space: KeySpace, key: str, tag_tokens: tuple[str, ...]) -> list[str]:
    """entry, namespace counter, group counter, lease, tag counters: the KEYS of acquire.lua and set.lua."""
    entry = space.entry(key)
    return [
        entry,
        space.namespace_version,
        space.group_version(space.group_of(key)),
        space.lease(entry),
        *(space.tag_prefix + t for t in tag_tokens),
    ]


def acquire(
    space: KeySpace,
    key: str,
    tag_tokens: tuple[str, ...],
    token: str,
    lease_ms: int,
    *,
    refresh: bool = False,
    seen_written: bytes = b"",
) -> Call:
    """Take ``key``'s lease after a miss (or, with ``refresh``, to refresh a valid entry early: only while the entry
    is still the one written at ``seen_written``, the header's write time the caller read)."""
    return Call(
        ACQUIRE,
        _entry_keys(space, key, tag_tokens),
        [space.tag_prefix, token, lease_ms, "refresh" if refresh else "miss", seen_written],
    )


def write(
    space: KeySpace,
    key: str,
    code: bytes,
    payload: bytes,
    ttl_ms: int,
    tag_tokens: tuple[str, ...] = (),
    *,
    grace_ms: int = 0,
    load_ms: int = 0,
    token: str = "",
    version: int | None = None,
    meta: str = "",
) -> Call:
    """Store ``payload`` under ``key`` for ``ttl_ms`` (+ ``grace_ms`` to be served stale), stamped with the current
    versions and tag counters.

    ``tag_tokens``: the entry's tags as :func:`~cachewise.keyspace.tag_token` encodes them.  ``token``: the lease
    this write completes ('' for a plain write, which voids any outstanding lease).  ``version``: keep an entry
    written with a newer or equal version instead.  The script returns 1 (stored), 0 (lease lost), -1 (invalidated
    during the load) or -2 (a newer version is stored).
    """
    tokens = tuple(dict.fromkeys(tag_tokens))
    if len(tokens) > MAX_TAGS:
        raise ValueError(f"an entry can have at most {MAX_TAGS} tags, got {len(tokens)}")
    return Call(
        SET,
        _entry_keys(space, key, tokens),
        [
            ttl_ms,
            grace_ms,
            code,
            load_ms,
            meta,
            payload,
            token,
            "" if version is None else version,
            space.fill_channel,
            *tokens,
        ],
    )


def payload_of_write(call: Call) -> bytes:
    """The payload a :func:`write` call stores."""
    payload: bytes = call.args[5]
    return payload


def release(space: KeySpace, key: str, token: str, *, skip: bool = False) -> Call:
    """Give a lease back without a value, waking the waiters: the loader failed (one of them loads next), or
    ``skip``: the value is too large to cache (they all load for themselves, without waiting, until the lease's
    time is up)."""
    entry = space.entry(key)
    return Call(RELEASE, [space.lease(entry)], [token, space.fill_channel, entry, "skip" if skip else ""])


def extend(space: KeySpace, key: str, tag_tokens: tuple[str, ...], token: str, lease_ms: int) -> Call:
    """Extend our lease on ``key``, and the counters it snapshotted, to ``lease_ms`` from now, if it is still ours
    and none of those counters moved (the loader is still running; see ``extend.lua``)."""
    return Call(EXTEND, _entry_keys(space, key, tag_tokens), [token, lease_ms, space.fill_channel])


def delete(space: KeySpace, key: str) -> Call:
    """Delete ``key`` and void its outstanding lease."""
    entry = space.entry(key)
    return Call(DELETE, [entry, space.lease(entry)], [space.fill_channel])


def bump(counters: list[str]) -> Call:
    """Increment version or tag counters (``bump_version``, ``invalidate_tags``)."""
    return Call(BUMP, counters, [])
