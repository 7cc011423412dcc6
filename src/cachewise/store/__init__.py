"""The entry protocol on the server, as pure *calls*: which script, which keys, which arguments.

Nothing here does I/O.  :class:`~cachewise.Cache` executes a :class:`Call` with its sync or asyncio client, so
the sync and async paths share every decision and differ only in ``await``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..keyspace import KeySpace, tag_token
from ..server.scripts import Script

__all__ = ["BUMP", "GET", "MAX_TAGS", "SET", "Call", "bump", "read", "write"]

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


def read(space: KeySpace, key: str) -> Call:
    """Read ``key``, checking its namespace version, group version and tags in the same call."""
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
    tags: tuple[str, ...] = (),
    meta: str = "",
) -> Call:
    """Store ``payload`` under ``key`` for ``ttl_ms``, stamped with the current versions and tag counters."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"an entry can have at most {MAX_TAGS} tags, got {len(tags)}")
    tokens = [tag_token(t) for t in dict.fromkeys(tags)]
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
