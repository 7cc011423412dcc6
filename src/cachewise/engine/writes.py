"""What a write stores, without I/O: the TTL, the bytes (serialized, size-checked, signed), the stamps, the command.

A write is the entry (``set.lua``, stamped with counter values the writer read), sent in one round trip after what
its counters need:

* ``counters.lua`` (creating the missing counters and keeping them alive at least as long as the entry), unless this
  process knows (:class:`StampMemo`) that every counter holds the stamped value and outlives the entry already;
* else a plain ``MGET`` of them when the write must learn whether its stamps are still right (``verify``), else
  nothing at all.

A lease holder stamps its value with the counters its lease was taken under and verifies them: a value loaded
before an invalidation is refused (not shared).  A plain write (``set``) stamps with the latest values this process
saw, or, for a counter it never saw, the value a missing counter is created with, and verifies them: when one was
wrong (another process bumped it since), it is sent again with the right ones.  The plain write of a read-through
miss stamps with the values its own read saw and does not verify: a counter that moved since makes it a miss for
every reader, as it should (the value may predate the invalidation).
"""

from __future__ import annotations

import random
import threading
import time
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

__all__ = ["Encoded", "EntryWriter", "StampMemo", "Write", "WriteResult"]

_MEMO_SIZE = 4096


# Never changed once built; not ``frozen``, which is several times slower to build, and this is built per miss.
@dataclass(slots=True)
class Encoded:
    """A value ready to store: its payload (signed when the cache signs) and TTL."""

    payload: bytes
    ttl_ms: int


# Never changed once built; not ``frozen``, which is several times slower to build, and this is built per miss.
@dataclass(slots=True)
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
    """The latest counter values this process saw, and until when each is known to live (``counters.lua`` answers
    their remaining lives), so that a write needs no read of them first and most writes need not keep them alive."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def stamps(self, counters: Sequence[str], fresh: str) -> list[bytes | str]:
        """A stamp per counter: the value last seen, or ``fresh`` (what the write creates a missing counter with)."""
        values = self._values
        return [values[c][0] if c in values else fresh for c in counters]

    def alive(self, counters: Sequence[str], stamps: Sequence[Any], life_ms: int) -> bool:
        """Whether every counter is known to hold its stamp and to live ``life_ms`` more (then a write stamped so
        need not keep them alive: each outlives the entry)."""
        values = self._values
        until = time.monotonic() + life_ms / 1000
        for counter, stamp in zip(counters, stamps):
            known = values.get(counter)
            if known is None or known[0] != stamp or known[1] < until:
                return False
        return True

    def learn(
        self, counters: Sequence[str], values: Sequence[Any], lives: Sequence[Any] = (), since: float = 0.0
    ) -> None:
        """The counters held ``values`` (and, from ``counters.lua``, had ``lives`` ms left when asked at ``since``, a
        ``time.monotonic()``).  A value learned without its life is not known to live: a bump keeps a counter's
        life, but a counter deleted and created again has a life this process did not see."""
        values_now = self._values
        with self._lock:
            if len(values_now) >= _MEMO_SIZE:
                values_now.clear()
            for i, (counter, value) in enumerate(zip(counters, values)):
                if not isinstance(value, bytes):
                    continue
                if i < len(lives):
                    values_now[counter] = (value, since + int(lives[i]) / 1000)
                else:
                    known = values_now.get(counter)
                    values_now[counter] = (value, known[1] if known is not None and known[0] == value else 0.0)


# Never changed once built; not ``frozen``, which is several times slower to build, and this is built per miss.
@dataclass(slots=True)
class Write:
    """A write ready to send: its command, and what its first part is (``"keep"``: ``counters.lua``, ``"read"``: an
    ``MGET`` of the counters, ``""``: none, the entry alone)."""

    command: Command
    counters: str
    stamps: tuple[bytes | str, ...]


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
        stamps: Sequence[bytes | str],
        fresh: str,
        *,
        verify: bool = True,
        grace_ms: int = 0,
        load_ms: int = 0,
        token: str = "",
        version: int | None = None,
        write_id: str = "",
        replaces: str = "",
    ) -> Write:
        """The write of ``plan.key`` stamped with ``stamps``, after what its counters need (see the module's
        docstring): kept alive (a missing one created with ``fresh``, or a new value when ``fresh`` is ``""``), read
        (``verify``), or nothing."""
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
        if not self.memo.alive(plan.counters, stamps, life):
            first, kind = commands.counters(plan.counters, life, fresh or commands.fresh_value()), "keep"
        elif verify:
            first, kind = plan.read_counters, "read"
        else:
            return Write(entry, "", tuple(stamps))
        return Write(Command.join("write", [first, entry]), kind, tuple(stamps))

    def result(self, write: Write, reply: Any, plan: ReadPlan, since: float) -> WriteResult:
        """What the replies of ``write`` (sent at ``since``, a ``time.monotonic()``) say; the counters' values
        and lives it learned go into :attr:`memo`."""
        wanted = [s.encode() if isinstance(s, str) else s for s in write.stamps]
        if write.counters == "":
            return WriteResult(int(reply), tuple(wanted), False)
        if write.counters == "keep":
            values, lives = reply[0]
            self.memo.learn(plan.counters, values, lives, since)
        else:
            values = reply[0]
            self.memo.learn(plan.counters, values)
        current = tuple(values)
        return WriteResult(int(reply[1]), current, list(current) != wanted)
