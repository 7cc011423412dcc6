"""The frame around every stored value, without I/O.

An entry on the server is ``b"cw1"`` + serializer code (1 byte) + header length (4 hex digits) + header + payload.
The header is ASCII tokens separated by spaces::

    <namespace version> <group version> <written at, ms> <ttl, ms> <grace, ms> <load time, ms> <tag count>
    [<tag> <tag version>]... [k=v]...

A read (one ``MGET`` of the entry and its counters) is judged by :func:`cachewise.entries.verdicts.judge`, which
compares the header's stamps with the counters; beyond that, a hit needs only the payload offset, and the times for
early refresh (the entry's expiry and its load time) and stale serving (``grace``: how long past its TTL it is
kept).  A value that does not start with the magic, or whose
serializer is unknown, is treated as a miss and counted (it was written by another program or an older format).
Trailing ``k=v`` tokens carry optional metadata (``v=``: the version of a versioned write).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HEADER_START", "MAGIC", "Entry", "EntryError", "parse", "payload_of"]

MAGIC = b"cw1"
HEADER_START = 8  # magic (3) + serializer code (1) + header length (4)


class EntryError(ValueError):
    """Bytes under one of our keys that are not a cachewise entry of this format."""


@dataclass(frozen=True)
class Entry:
    """A parsed entry (used by tools and tests; the hit path only calls :func:`payload_of`)."""

    serializer: bytes
    namespace_version: int
    group_version: int
    written_at_ms: int
    ttl_ms: int
    grace_ms: int
    load_ms: int
    tags: dict[str, int]
    meta: dict[str, str] = field(default_factory=dict)
    payload: bytes = b""


def payload_of(raw: bytes) -> tuple[bytes, bytes]:
    """(serializer code, payload) of a stored entry; :class:`EntryError` for anything else."""
    if raw[:3] != MAGIC or len(raw) < HEADER_START:
        raise EntryError("not a cachewise entry")
    try:
        hlen = int(raw[4:8], 16)
    except ValueError:
        raise EntryError("corrupt entry header length") from None
    start = HEADER_START + hlen
    if start > len(raw):
        raise EntryError("truncated entry")
    return raw[3:4], raw[start:]


def parse(raw: bytes) -> Entry:
    """Every field of a stored entry."""
    code, payload = payload_of(raw)
    hlen = int(raw[4:8], 16)
    try:
        tokens = raw[HEADER_START : HEADER_START + hlen].decode("ascii").split(" ")
        ns_v, grp_v, written, ttl, grace, load, ntags = (int(t) for t in tokens[:7])
        tag_tokens = tokens[7 : 7 + 2 * ntags]
        if len(tag_tokens) != 2 * ntags:
            raise IndexError
        tags = {tag_tokens[i]: int(tag_tokens[i + 1]) for i in range(0, len(tag_tokens), 2)}
        meta = dict(t.split("=", 1) for t in tokens[7 + 2 * ntags :] if "=" in t)
    except (ValueError, IndexError):
        raise EntryError("corrupt entry header") from None
    return Entry(code, ns_v, grp_v, written, ttl, grace, load, tags, meta, payload)


def meta_tokens(meta: dict[str, str | int | float]) -> str:
    """Encode metadata as ``k=v`` tokens for the header (keys and values must not contain spaces)."""
    parts = []
    for k, v in meta.items():
        text = f"{k}={v}"
        if " " in text or "\n" in text:
            raise ValueError(f"entry metadata must not contain spaces: {text!r}")
        parts.append(text)
    return " ".join(parts)
