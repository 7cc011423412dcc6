"""The demo's keys on the server: check that every one has a TTL.

Only keys under ``<namespace>:`` are read (SCAN with a ``MATCH`` on the namespace's prefix); deleting them afterwards
is :meth:`cachewise.Cache.clear`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from ..cache import Cache

__all__ = ["TTLAudit", "audit_ttls"]

_BATCH = 500


@dataclass(frozen=True)
class TTLAudit:
    """What a scan of the namespace found."""

    keys: int
    #: Keys that would live forever (``PTTL`` = -1).
    without_ttl: tuple[str, ...]
    min_pttl_ms: int | None
    max_pttl_ms: int | None


def _batches(cache: Cache) -> Iterator[list[bytes]]:
    keys = cache.connection.sync.scan_iter(match=cache.keyspace.pattern, count=1000)
    while batch := list(islice(keys, _BATCH)):
        yield batch


def audit_ttls(cache: Cache) -> TTLAudit:
    """Scan every key of the cache's namespace and read its ``PTTL`` (pipelined, one round trip per batch)."""
    client = cache.connection.sync
    count, offenders, ttls = 0, [], []
    for batch in _batches(cache):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.pttl(key)
        for key, pttl in zip(batch, pipe.execute()):
            if pttl == -2:  # expired between SCAN and PTTL
                continue
            count += 1
            if pttl == -1:
                offenders.append(key.decode(errors="replace"))
            else:
                ttls.append(int(pttl))
    return TTLAudit(
        keys=count,
        without_ttl=tuple(offenders),
        min_pttl_ms=min(ttls, default=None),
        max_pttl_ms=max(ttls, default=None),
    )
