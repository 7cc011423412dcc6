"""What a write stores, without I/O: the TTL, the bytes (serialized, size-checked, signed), the stamps, the command.

A write is two parts sent in one round trip: ``counters.lua`` on the entry's counters (creating the missing ones and
keeping them alive at least as long as the entry) and ``set.lua`` on the entry (stamped with counter values the
writer read).  A lease holder stamps its value with the counters its lease was taken under; a plain write (``set``)
with the latest values this process saw (:class:`StampMemo`), or, for a counter it never saw, the value a missing
counter is created with.  The counters' reply says whether the stamps were right: when one was not (another process
bumped it since), a plain write is sent again with the right ones, and a lease holder's value is refused (it was
loaded before an invalidation).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..entries import commands
from ..errors import SerializationError
from ..failures import ErrorLog
from ..keyspace import KeySpace
from ..serializers import Serializer
from ..signing import Signer
from ..stats import Counters, StatsRegistry
from ..transport.command import Command
from ..ttl import TTLLike, check_jitter, resolve_ttl_ms
from .reads import ReadPlan

__all__ = ["Encoded", "EntryWriter", "StampMemo", "WriteResult"]

_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Encoded:
    """A value ready to store: its payload (signed when the cache signs) and TTL."""

    payload: bytes
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write's two replies said: ``status`` (set.lua's: 1 stored, 0 lease lost, -2 a newer version kept) and
    ``current``, the counters' values as the server has them (``stale``: they differ from the stamps written)."""

    status: int
    current: tuple[bytes, ...]
    stale: bool

    @property
    def stored(self) -> bool:
        """Stored, and stamped with the counters' current values (a reader will see it)."""
        return self.status == 1 and not self.stale


class StampMemo:
    """The latest counter values this process saw, so that a plain write needs no read of them first."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def stamps(self, counters: Sequence[str], fresh: str) -> list[bytes | str]:
        """A stamp per counter: the value last seen, or ``fresh`` (what the write creates a missing counter with)."""
        values = self._values
        return [values.get(c, fresh) for c in counters]

    def learn(self, counters: Sequence[str], values: Sequence[Any]) -> None:
        with self._lock:
            if len(self._values) >= _MEMO_SIZE:
                self._values.clear()
            for counter, value in zip(counters, values):
                if isinstance(value, bytes):
                    self._values[counter] = value


class EntryWriter:
    """Turns values into write commands for one cache (its TTL rules, serializer, size limit and signer)."""

    def __init__(
        self,
        space: KeySpace,
        serializer: Serializer,
        stats: StatsRegistry,
        errors: ErrorLog,
        *,
        default_ttl: TTLLike | None = None,
        jitter: float = 0.0,
        max_value_bytes: int | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.space = space
        self.serializer = serializer
        self.stats = stats
        self.errors = errors
        self.default_ttl = default_ttl
        self.jitter = jitter
        self.max_value_bytes = max_value_bytes
        self.signer = signer
        self.memo = StampMemo()
        self._rng = random.Random()

    def encode(self, key: str, value: Any, ttl: TTLLike | None, jitter: float | None, where: str) -> Encoded | None:
        """``value`` ready to store, or None when it is too large to cache (counted and logged; the caller still gets
        the value).  Raises for programmer errors (no TTL, unserialisable), naming ``where``."""
        ttl_ms = resolve_ttl_ms(
            ttl,
            self.default_ttl,
            jitter=self.jitter if jitter is None else check_jitter(jitter),
            rng=self._rng,
            where=where,
        )
        try:
            payload = self.serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"{where}: {exc}") from None
        if self.max_value_bytes is not None and len(payload) > self.max_value_bytes:
            self.oversize(key, len(payload))
            return None
        if self.signer is not None:
            payload = self.signer.sign(self.space.entry(key), self.serializer.code, payload)
        return Encoded(payload, ttl_ms)

    def oversize(self, key: str, size: int, scope: Counters | None = None) -> None:
        self.stats.add(scope, "oversize")
        self.errors.log(
            "oversize",
            f"not caching {key!r}: its value is {size:,} bytes, over max_value_bytes={self.max_value_bytes:,} "
            "(the caller still gets it; raise the limit or cache something smaller)",
        )

    def command(
        self,
        plan: ReadPlan,
        encoded: Encoded,
        stamps: Sequence[bytes | str | None],
        fresh: str,
        *,
        grace_ms: int = 0,
        load_ms: int = 0,
        token: str = "",
        version: int | None = None,
        write_id: str = "",
        replaces: str = "",
    ) -> Command:
        """The two parts of a write of ``plan.key``: the counters kept alive (created with ``fresh`` when missing),
        then the entry stamped with ``stamps``."""
        life = encoded.ttl_ms + grace_ms
        entry = commands.write(
            self.space,
            plan.key,
            self.serializer.code,
            encoded.payload,
            encoded.ttl_ms,
            stamps,
            plan.tokens,
            grace_ms=grace_ms,
            load_ms=load_ms,
            token=token,
            version=version,
            write_id=write_id,
            replaces=replaces,
        )
        return Command.join("write", [commands.counters(plan.counters, life, fresh), entry])

    @staticmethod
    def result(reply: list[Any], stamps: Sequence[bytes | str | None]) -> WriteResult:
        """What the replies of :meth:`command` say (``stamps``: those it was built with)."""
        current = tuple(reply[0])
        wanted = [s.encode() if isinstance(s, str) else s for s in stamps]
        return WriteResult(int(reply[1]), current, list(current) != wanted)
