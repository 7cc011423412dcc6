"""What a read of an entry found, without I/O: a hit, a miss, a stale or unreadable entry, or a reason to look again.

A read is one ``MGET`` of the entry and of the counters it may be stamped with (:func:`~cachewise.entries.commands.
read_keys`: namespace version, group version, the tags the caller knows of).  :func:`judge` compares the stamps in
the entry's header with the counters' values; an entry carrying a tag the caller did not name is judged again after
a second read that includes that tag's counter (:func:`tags_of` says which).
"""

from __future__ import annotations

from typing import Any

from .envelope import HEADER_START, MAGIC

__all__ = [
    "HIT",
    "INVALID",
    "MAX_TAGS",
    "MISS",
    "NO_HEAD",
    "RECHECK",
    "STALE",
    "header_of",
    "judge",
    "tags_of",
    "times",
]

#: Tags per entry; each costs a counter read on every hit.
MAX_TAGS = 32
#: Index of the tag count among the header's tokens (see ``entry.lua``).
_NTAGS = 6

#: Verdicts of :func:`judge`.
HIT, MISS, STALE, INVALID, RECHECK = range(5)
NO_HEAD: list[bytes] = []


def judge(reply: list[Any], tag_tokens: tuple[str, ...] = ()) -> tuple[int, int, list[bytes]]:
    """What an ``MGET`` of :func:`~cachewise.entries.commands.read_keys` found: ``(verdict, payload offset, header
    tokens)``.

    ``STALE``: a counter moved since the entry was written (a version bump or a tag invalidation), or is gone.
    ``INVALID``: bytes that are not an entry of ours.  ``RECHECK``: the entry has a tag the reader did not name; read
    it again with that tag's counter (:func:`tags_of`).  The header tokens of a hit give its times (:func:`times`).
    """
    raw = reply[0]
    if raw is None:
        return MISS, 0, NO_HEAD
    if raw[:3] != MAGIC:
        return INVALID, 0, NO_HEAD
    try:
        start = HEADER_START + int(raw[4:8], 16)
    except ValueError:
        return INVALID, 0, NO_HEAD
    head = raw[HEADER_START:start].split(b" ")
    if start > len(raw) or len(head) <= _NTAGS:
        return INVALID, 0, NO_HEAD
    if head[0] != reply[1] or head[1] != reply[2]:
        return STALE, 0, NO_HEAD
    if head[_NTAGS] != b"0":
        try:
            ntags = int(head[_NTAGS])
            for i in range(_NTAGS + 1, _NTAGS + 1 + 2 * ntags, 2):
                token = head[i].decode()
                if token not in tag_tokens:
                    return RECHECK, 0, NO_HEAD
                if reply[3 + tag_tokens.index(token)] != head[i + 1]:
                    return STALE, 0, NO_HEAD
        except (ValueError, IndexError, UnicodeDecodeError):
            return INVALID, 0, NO_HEAD
    return HIT, start, head


def tags_of(raw: bytes) -> tuple[str, ...] | None:
    """The tag tokens an entry is stamped with (for the second read of :data:`RECHECK`); None when its header is not
    one of ours."""
    try:
        head = header_of(raw)
        ntags = int(head[_NTAGS])
        tokens = tuple(head[i].decode() for i in range(_NTAGS + 1, _NTAGS + 1 + 2 * ntags, 2))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return tokens if 0 < len(tokens) <= MAX_TAGS else None


def header_of(raw: bytes) -> list[bytes]:
    """The header tokens of an entry (``ValueError`` when it has no readable header length)."""
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
