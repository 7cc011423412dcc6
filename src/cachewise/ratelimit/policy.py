"""Rate-limit policy, without I/O: limits, keys' parts, the script's arguments, and what its reply means.

See :mod:`cachewise.ratelimit` for what each algorithm guarantees; :class:`~cachewise.ratelimit.RateLimiter`
sends the calls.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, InvalidKeyError

__all__ = [
    "ALGORITHMS",
    "MAX_IDENTITY_CHARS",
    "MAX_PERIOD",
    "MIN_PERIOD",
    "ON_ERROR",
    "Decision",
    "Limit",
    "decide",
    "degraded",
    "hit_args",
    "identity_token",
    "period_seconds",
    "resolve_limits",
]

#: The algorithms, and their code in the script's arguments and in key names.
ALGORITHMS: dict[str, str] = {"fixed_window": "fw", "sliding_window": "sw", "token_bucket": "tb"}
ON_ERROR = ("allow", "deny")
#: Periods shorter than this are refused (keys' TTLs are in milliseconds).
MIN_PERIOD = 0.001
#: Periods longer than this (366 days) are refused: the script's arithmetic stays exact below it.
MAX_PERIOD = 366 * 86400.0
#: Encoded identities longer than this are shortened (see :func:`identity_token`).
MAX_IDENTITY_CHARS = 256


def _positive_int(value: Any, what: str, hint: str) -> int:
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{what} must be a whole number >= 1, got {value!r}: {hint}")
    return value


def period_seconds(period: Any, where: str = "period") -> float:
    """``period`` (seconds as int/float, or a timedelta) in seconds; :class:`ConfigurationError` when unusable."""
    if isinstance(period, timedelta):
        seconds = period.total_seconds()
    elif isinstance(period, (int, float)) and not isinstance(period, bool):
        seconds = float(period)
    else:
        raise ConfigurationError(
            f"{where} must be seconds (int or float) or a timedelta, got {type(period).__name__}: {period!r}"
        )
    if not math.isfinite(seconds) or not MIN_PERIOD <= seconds <= MAX_PERIOD:
        raise ConfigurationError(f"{where} must be between 1 ms and 366 days, got {period!r}")
    return seconds


@dataclass(frozen=True)
class Limit:
    """One rate: ``limit`` requests (of cost 1) per ``period`` (seconds, or a timedelta; stored as seconds).

    ``algorithm``: ``"token_bucket"`` (default), ``"sliding_window"`` or ``"fixed_window"`` (see the module's
    documentation for what each guarantees).  ``burst`` (token bucket only, default ``limit``): how many requests an
    idle client may send at once.
    """

    limit: int
    period: float | timedelta
    algorithm: str = "token_bucket"
    burst: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self.limit, "a rate limit's limit", "the number of requests allowed per period")
        object.__setattr__(self, "period", period_seconds(self.period, "a rate limit's period"))
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"unknown rate limiting algorithm {self.algorithm!r}: use one of {', '.join(map(repr, ALGORITHMS))}"
            )
        if self.algorithm != "token_bucket":
            if self.burst is not None:
                raise ConfigurationError(
                    f"burst= is for algorithm='token_bucket' only, not {self.algorithm!r}: drop it, or use a token "
                    "bucket"
                )
            return
        if self.burst is None:
            object.__setattr__(self, "burst", self.limit)
        _positive_int(self.burst, "burst", "how many requests an idle client may send at once (default: limit)")
        if self.period_us < self.limit:
            raise ConfigurationError(
                f"a token bucket of {self.limit} per {self.seconds:g} s is finer than the server clock's µs: allow at "
                "most 1,000,000 per second, or use a fixed or sliding window"
            )

    @property
    def seconds(self) -> float:
        """The period in seconds."""
        return self.period if isinstance(self.period, float) else period_seconds(self.period)

    @cached_property
    def period_us(self) -> int:
        return max(1000, round(self.seconds * 1_000_000))

    @property
    def capacity(self) -> int:
        """The largest cost a single hit can ever have (``burst`` for a token bucket, else ``limit``)."""
        return self.burst if self.burst is not None else self.limit

    @cached_property
    def spec(self) -> str:
        """This limit in a key: e.g. ``tb100p60s``, ``fw10p1500ms``, ``tb100p60sb20`` (burst other than limit)."""
        us = self.period_us
        if us % 1_000_000 == 0:
            period = f"{us // 1_000_000}s"
        elif us % 1000 == 0:
            period = f"{us // 1000}ms"
        else:
            period = f"{us}us"
        burst = f"b{self.burst}" if self.burst is not None and self.burst != self.limit else ""
        return f"{ALGORITHMS[self.algorithm]}{self.limit}p{period}{burst}"

    def script_args(self) -> list[bytes]:
        """This limit's four arguments of the script: algorithm, limit, period (µs), burst."""
        return [ALGORITHMS[self.algorithm].encode(), b"%d" % self.limit, b"%d" % self.period_us, b"%d" % self.capacity]

    def __str__(self) -> str:
        burst = f", burst {self.burst}" if self.burst is not None else ""
        return f"{self.limit} per {self.seconds:g} s ({self.algorithm}{burst})"


@dataclass(frozen=True)
class Decision:
    """What the limiter decided for one hit (or what a hit would get, from a peek)."""

    allowed: bool
    #: The binding policy's limit (``policy.limit``).
    limit: int
    #: Requests of cost 1 the binding policy still allows now (after this hit, when it was allowed).
    remaining: int
    #: Seconds until a refused request could pass (0 when allowed).
    retry_after: float
    #: Seconds until the binding policy is fully available again.
    reset_after: float
    #: The binding limit: the one that refused (the one that frees up last, if several did), else the one with the
    #: least remaining.
    policy: Limit
    #: True when the server could not be asked and ``on_error`` decided.
    degraded: bool = False


def resolve_limits(
    limit: int | None,
    period: float | timedelta | None,
    algorithm: str,
    burst: int | None,
    limits: Any,
) -> tuple[Limit, ...]:
    """The limits of a :class:`RateLimiter`, from either ``limit=``/``period=`` or ``limits=``."""
    if limits is not None:
        if limit is not None or period is not None or burst is not None:
            raise ConfigurationError(
                "give either limit=/period= (one limit) or limits=[Limit(...), ...] (several), not both"
            )
        if isinstance(limits, Limit):
            limits = [limits]
        resolved = tuple(limits)
        if not resolved or not all(isinstance(x, Limit) for x in resolved):
            raise ConfigurationError("limits= takes a non-empty list of cachewise.ratelimit.Limit(limit, period)")
    else:
        if limit is None or period is None:
            raise ConfigurationError(
                "a RateLimiter needs limit= and period= (e.g. limit=100, period=60 for 100 per minute), or limits="
            )
        resolved = (Limit(limit, period, algorithm, burst),)
    specs = [x.spec for x in resolved]
    if len(set(specs)) != len(specs):
        raise ConfigurationError(f"the same limit is given twice in limits={list(map(str, resolved))}: give it once")
    return resolved


def identity_token(identity: str) -> str:
    """An identity as the last segment of a key: percent-encoded (never a ``:``, ``*``, ``/`` or space).  One longer
    than 256 characters once encoded becomes its first 64 characters, encoded, then ``/`` and a digest of the whole:
    short, and never equal to another identity's token (an encoded identity has no ``/``)."""
    if type(identity) is not str:
        raise InvalidKeyError(
            f"a rate-limit identity must be a str (an IP, a user id, ...), got {type(identity).__name__}: "
            f"{identity!r}; convert it, e.g. str(user_id)"
        )
    token = quote(identity, safe="", errors="surrogatepass")  # a lone surrogate (from surrogateescape) is no crash
    if len(token) > MAX_IDENTITY_CHARS:
        digest = hashlib.blake2b(identity.encode(errors="surrogatepass"), digest_size=20).hexdigest()
        token = f"{quote(identity[:64], safe='', errors='surrogatepass')}/{digest}"
    return token


def hit_args(cost: Any, max_cost: int, static: list[bytes]) -> list[bytes | int]:
    """The script's arguments for one call; :class:`ConfigurationError` for a cost that is not usable."""
    if type(cost) is not int or cost < 1:
        raise ConfigurationError(f"cost must be a whole number >= 1, got {cost!r}")
    if cost > max_cost:
        raise ConfigurationError(
            f"cost={cost} can never be allowed: it is more than a limit allows at once ({max_cost}); raise the "
            "limit (or burst=), or split the request"
        )
    return [cost, *static]


_new_object = object.__new__


def decide(reply: bytes, limits: tuple[Limit, ...]) -> Decision:
    """The :class:`Decision` the script's reply means: ``b"<binding> <remaining> <retry µs> <reset µs>"``, where
    ``binding`` is the binding limit's 1-based index, negative when the hit is refused."""
    index, remaining, retry_us, reset_us = reply.split()
    binding = int(index)
    policy = limits[abs(binding) - 1]
    # What Decision(...) builds, without the frozen __init__'s seven object.__setattr__ calls (half of this
    # function's cost, on every request).
    decision: Decision = _new_object(Decision)
    decision.__dict__.update(
        allowed=binding > 0,
        limit=policy.limit,
        remaining=int(remaining),
        retry_after=int(retry_us) / 1e6,
        reset_after=int(reset_us) / 1e6,
        policy=policy,
        degraded=False,
    )
    return decision


def degraded(limits: tuple[Limit, ...], allow: bool, cost: int, retry_after: float) -> Decision:
    """The decision when the server could not be asked: ``allow`` (fail open) or not (fail closed, retry after
    ``retry_after`` s, when the server will be tried again).  The binding policy is the first limit."""
    policy = limits[0]
    if allow:
        return Decision(True, policy.limit, max(0, policy.limit - cost), 0.0, 0.0, policy, degraded=True)
    return Decision(False, policy.limit, 0, retry_after, retry_after, policy, degraded=True)
