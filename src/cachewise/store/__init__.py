"""The entry protocol on the server, without I/O: which keys a read fetches, what its reply means, and the script
calls that write and invalidate.

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
    "BUMP",
    "GET",
    "HIT",
    "INVALID",
    "MAX_TAGS",
    "MISS",
    "RECHECK",
    "SET",
    "STALE",
    "Call",
    "bump",
    "judge",
    "read",
    "read_keys",
    "write",
]

GET = Script.beside(__name__, "get.lua")
SET = Script.beside(__name__, "set.lua")
BUMP = Script.beside(__name__, "bump.lua")

#: Tags per entry; each costs a counter read on every hit.
MAX_TAGS = 32


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: run it as ``call.script(client, call.keys, call.args)``."""

    script: Script
    keys: list[str]
    args: list[Any]


#: Verdicts of :func:`judge`.
HIT, MISS, STALE, INVALID, RECHECK = range(5)


def read_keys(space: KeySpace, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
    """The keys one ``MGET`` reads for ``key``: the entry, its version counters, and the named tags' counters."""
    keys = [space.entry(key), space.namespace_version, space.group_version(space.group_of(key))]
    if tag_tokens:
        keys.extend(space.tag_prefix + t for t in tag_tokens)
    return keys


def judge(reply: list[Any], tag_tokens: tuple[str, ...] = ()) -> tuple[int, int]:
    """What an ``MGET`` from :func:`read_keys` found: ``(verdict, payload offset)``.

    ``STALE``: a counter moved since the entry was written (a version bump or a tag invalidation).  ``INVALID``:
    bytes that are not an entry of ours.  ``RECHECK``: the entry has a tag the reader did not name; read it again
    with the Lua read (:func:`read`).
    """
    raw = reply[0]
    if raw is None:
        return MISS, 0
    if raw[:3] != MAGIC:
        return INVALID, 0
    try:
        start = HEADER_START + int(raw[4:8], 16)
    except ValueError:
        return INVALID, 0
    head = raw[HEADER_START:start].split(b" ")
    if start > len(raw) or len(head) < 5:
        return INVALID, 0
    if head[0] != reply[1] or head[1] != reply[2]:
        return STALE, 0
    if head[4] != b"0":
        try:
            ntags = int(head[4])
            for i in range(5, 5 + 2 * ntags, 2):
                token = head[i].decode()
                if token not in tag_tokens:
                    return RECHECK, 0
                if reply[3 + tag_tokens.index(token)] != head[i + 1]:
                    return STALE, 0
        except (ValueError, IndexError, UnicodeDecodeError):
            return INVALID, 0
    return HIT, start


def read(space: KeySpace, key: str) -> Call:
    """The Lua read: ``key``'s value if no counter it is stamped with (versions, any tag) has moved, else nil."""
    return Call(
        GET,
        [space.entry(key), space.namespace_version, space.group_version(space.group_of(key))],
        [space.tag_prefix],
    )


def write(
    space: KeySpace,
    key: str,
    code: bytes,
    payload: bytes,
    ttl_ms: int,
    tag_tokens: tuple[str, ...] = (),
    meta: str = "",
) -> Call:
    """Store ``payload`` under ``key`` for ``ttl_ms``, stamped with the current versions and tag counters.

    ``tag_tokens``: the entry's tags as :func:`~cachewise.keyspace.tag_token` encodes them.
    """
    tokens = list(dict.fromkeys(tag_tokens))
    if len(tokens) > MAX_TAGS:
        raise ValueError(f"an entry can have at most {MAX_TAGS} tags, got {len(tokens)}")
    return Call(
        SET,
        [
            space.entry(key),
            space.namespace_version,
            space.group_version(space.group_of(key)),
            *(space.tag_prefix + t for t in tokens),
        ],
        [ttl_ms, code, meta, payload, *tokens],
    )


def bump(counters: list[str]) -> Call:
    """Increment version or tag counters (``bump_version``, ``invalidate_tags``)."""
    return Call(BUMP, counters, [])
