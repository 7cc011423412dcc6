"""TTL policy, without I/O: normalising, jitter, and expiry aligned to a refresh schedule.

Every write in cachewise carries a TTL (the seed guide's §5: a cache entry without a TTL is a bug waiting to
happen).  This module turns what the user wrote (seconds, a ``timedelta``, or an :class:`AlignedTTL`) into the
milliseconds sent to the server with ``PX``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Union

from .errors import InvalidTTLError, TTLRequiredError

__all__ = [
    "MAX_TTL_SECONDS",
    "AlignedTTL",
    "TTLLike",
    "check_jitter",
    "resolve_ttl_ms",
    "to_seconds",
    "until_next",
]

#: Ten years.  A longer TTL is almost certainly a unit mistake (milliseconds passed as seconds).
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class AlignedTTL:
    """A TTL that ends at the next boundary of a refresh schedule.

    Data refreshed every hour (the seed's checkpoint question) should expire at the next full hour, not one hour
    after it was read.  Boundaries are multiples of ``every`` counted from the Unix epoch (UTC), shifted by
    ``offset``; ``until_next(hours=1, offset=timedelta(minutes=5))`` expires at 00:05, 01:05, 02:05 ...
    The TTL is computed at each write, so one policy object serves every call.
    """

    every: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not (self.every > 0 and math.isfinite(self.every)):
            raise InvalidTTLError(f"the refresh period must be a positive number of seconds, got {self.every!r}")
        if not (0 <= self.offset < self.every):
            raise InvalidTTLError(f"the refresh offset must be in [0, every) = [0, {self.every}), got {self.offset!r}")

    def seconds_left(self) -> float:
        """Seconds from now to the next boundary."""
        return self.seconds_from(time.time())

    def seconds_from(self, now: float) -> float:
        """Seconds from ``now`` (a Unix timestamp) to the next boundary; a full period when exactly on one."""
        phase = (now - self.offset) % self.every
        return self.every - phase


def until_next(
    *,
    days: float = 0,
    hours: float = 0,
    minutes: float = 0,
    seconds: float = 0,
    offset: timedelta | float = 0,
) -> AlignedTTL:
    """A TTL that ends at the next refresh boundary: ``cache.set(k, v, ttl=until_next(hours=1))``."""
    every = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    off = offset.total_seconds() if isinstance(offset, timedelta) else float(offset)
    return AlignedTTL(every=every, offset=off)


TTLLike = Union[int, float, timedelta, AlignedTTL]  # noqa: UP007 (a runtime alias on Python 3.10)


def to_seconds(ttl: int | float | timedelta) -> float:
    """Validate a plain TTL and return it in seconds."""
    if isinstance(ttl, bool):
        raise InvalidTTLError(f"a TTL must be seconds (int/float) or a timedelta, got the bool {ttl!r}")
    if isinstance(ttl, timedelta):
        value = ttl.total_seconds()
    elif isinstance(ttl, (int, float)):
        value = float(ttl)
    else:
        raise InvalidTTLError(
            f"a TTL must be seconds (int/float), a timedelta or until_next(...), got {type(ttl).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise InvalidTTLError(f"a TTL must be a positive number of seconds, got {ttl!r}")
    if value > MAX_TTL_SECONDS:
        raise InvalidTTLError(f"a TTL of {value:.0f} s is over ten years; if you meant milliseconds, divide by 1000")
    return value


def resolve_ttl_ms(
    ttl: TTLLike | None,
    default: TTLLike | None,
    *,
    jitter: float = 0.0,
    now: float | None = None,
    rng: random.Random | None = None,
    where: str = "this write",
) -> int:
    """The TTL in whole milliseconds (at least 1) that a write sends to the server.

    ``jitter`` spreads expiries by ±``jitter`` × TTL so that keys written together do not all expire in the same
    instant.  For an :class:`AlignedTTL`, jitter only ever shortens the TTL: an entry must not outlive the refresh
    it is aligned to.
    """
    chosen = ttl if ttl is not None else default
    if chosen is None:
        raise TTLRequiredError(
            f"{where} has no TTL. Every cache entry needs one (an entry without a TTL outlives the data it "
            "copies): pass ttl=seconds or a timedelta, ttl=until_next(hours=1) to expire at the next refresh, "
            "or set Cache(default_ttl=...)."
        )
    if isinstance(chosen, AlignedTTL):
        seconds = chosen.seconds_from(time.time() if now is None else now)
        low, high = 1.0 - jitter, 1.0
    else:
        seconds = to_seconds(chosen)
        low, high = 1.0 - jitter, 1.0 + jitter
    if jitter:
        seconds *= (rng or random).uniform(low, high)
    return max(1, int(seconds * 1000))


def check_jitter(jitter: float) -> float:
    """Validate a jitter fraction (0 ≤ jitter < 1)."""
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
        raise InvalidTTLError(f"jitter is a fraction of the TTL in [0, 1), e.g. 0.1 for ±10 %, got {jitter!r}")
    return float(jitter)
