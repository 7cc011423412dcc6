"""A process-local tier (L1) in front of the server, kept coherent by the server's invalidations.

``Cache(url, local=True)`` or ``local=LocalCache(maxsize=..., ...)``: hot keys are answered from this process's
memory, and a write or an invalidation made anywhere (another process, ``redis-cli``) drops them here within the
invalidation's delivery time, and never more than ``max_lag`` seconds later (see :mod:`cachewise.local.tier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigurationError
from .tier import LocalStats, LocalTier
from .tracking import Tracker

__all__ = ["LocalCache", "LocalStats", "LocalTier", "Tracker"]


@dataclass(frozen=True)
class LocalCache:
    """How the local tier of a :class:`~cachewise.Cache` is bounded and kept coherent.

    ``maxsize``: entries at most (least recently used go first); ``max_bytes``: total size of the entries as
    stored on the server, when given; ``ttl``: seconds an entry may stay at most (it never outlives the server
    entry's own TTL either); ``max_lag``: the longest a value served from memory may be behind the server when the
    invalidation link stalls silently (the tier stops serving after that); ``protocol``: 2 (RESP2: the link
    subscribes to ``__redis__:invalidate``) or 3 (RESP3 push messages).

    Values are kept decoded and handed out as they are, shared between callers: do not mutate what you get.
    """

    maxsize: int = 10_000
    max_bytes: int | None = None
    ttl: float | None = None
    max_lag: float = 0.5
    protocol: int = 2

    def __post_init__(self) -> None:
        if type(self.maxsize) is not int or self.maxsize < 1:
            raise ConfigurationError(f"LocalCache(maxsize={self.maxsize!r}): use a whole number of entries >= 1")
        if self.max_bytes is not None and (type(self.max_bytes) is not int or self.max_bytes < 1):
            raise ConfigurationError(f"LocalCache(max_bytes={self.max_bytes!r}): use None or a whole number >= 1")
        if self.ttl is not None and not _positive(self.ttl):
            raise ConfigurationError(f"LocalCache(ttl={self.ttl!r}): use None or a number of seconds > 0")
        if not _positive(self.max_lag):
            raise ConfigurationError(f"LocalCache(max_lag={self.max_lag!r}): use a number of seconds > 0")
        if self.protocol not in (2, 3):
            raise ConfigurationError(f"LocalCache(protocol={self.protocol!r}): use 2 (RESP2) or 3 (RESP3)")

    def tier(self) -> LocalTier:
        return LocalTier(self.maxsize, self.max_bytes, self.ttl, self.max_lag)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
