"""Rate limiting on the cache's server: the seed's ``INCR`` + ``EXPIRE`` limiter made atomic, plus a sliding window and
a token bucket.

>>> limiter = RateLimiter(cache, limit=100, period=60)                  # token bucket (GCRA), burst 100
>>> decision = limiter.hit("ip:203.0.113.9")
>>> decision.allowed, decision.remaining, decision.retry_after, decision.reset_after

Every hit is one call of one Lua script (``ratelimit.lua``, loaded once, called by SHA): it reads the server's clock
(``TIME``, so clients whose clocks disagree agree), checks *every* limit of the identity, and consumes all of them
or none (a request refused by one limit uses up no other).  Each limit of an identity is one key, written only with
its TTL in the same command (``SET ... PX``), so a client killed at any instant can never leave a key that lives
forever (the seed's limiter did: ``INCR``, crash, no ``EXPIRE``, that IP blocked for good).

The algorithms (``algorithm=``):

``fixed_window``
    A count per window; windows are aligned on multiples of the period since the epoch, so every process agrees on
    them.  At most ``limit`` per window, exactly; but up to ``2 × limit`` across a window edge (``limit`` at the end
    of one window and ``limit`` at the start of the next).
``sliding_window``
    Weighted two-window counter (O(1) memory: one key holding two counts).  It estimates the requests of the last
    period as ``count of this window + count of the previous window × the share of the previous window still inside
    the period ending now`` (it assumes the previous window's requests were evenly spread) and allows a hit while
    the estimate plus its cost is at most ``limit``.  **Worst-case error**, for any arrival pattern: it allows at
    most ``limit`` in each fixed window (so at most ``n × limit`` over n windows: the long-run rate is exact), and at
    most ``limit × (1 + f)`` in any span of one period that ends a fraction ``f`` (0 ≤ f < 1) into a window — so
    always fewer than ``2 × limit``, reached only when the previous window's requests all came at its very end.
    (The span holds at most the previous window's count ``p`` plus this window's count ``c``, and the last hit
    allowed satisfied ``c + p × (1 − f) ≤ limit``; so ``c + p ≤ limit + p × f ≤ limit × (1 + f)``.)  It errs the
    other way, refusing early, by at most ``p × (1 − f)`` when the previous window's requests came at its start.
    Evenly spread traffic is counted exactly.  Unlike a fixed window, the excess is admitted gradually: it cannot
    take ``2 × limit`` in an instant.
``token_bucket`` (the default)
    GCRA: one timestamp per key (the theoretical arrival time).  ``burst`` requests at once (default ``limit``), then
    one every ``period / limit``: in any span of ``d`` seconds at most ``burst + d × limit / period``, exactly, at
    the µs resolution of the server's clock (so at most 1,000,000 per second).  The key expires when the bucket is
    full again.

Each key lives as long as its state matters: a fixed window's until the window ends, a sliding window's until the
next one ends, a token bucket's until it is full again.  ``peek`` reports what a hit of cost 1 would get without
counting anything; ``reset`` forgets an identity (and raises :class:`~cachewise.errors.InvalidationError` when the
server could not be reached, as the cache's invalidations do).

Several limits at once (``limits=[Limit(10, 1), Limit(1000, 3600, algorithm="fixed_window")]``) cost one round trip.

When the server cannot be asked (down, timing out, or its circuit breaker open), the limiter does not raise: it
follows ``on_error``: ``"allow"`` (the default: fail open, as the cache does — a rate limiter must not take the
application down with the cache) or ``"deny"`` (fail closed, for limits that protect something costly, such as
login attempts).  Such decisions have ``degraded=True``; each is counted in the cache's stats (``errors``, or
``skipped`` when the breaker was open) and logged without flooding.

Keys: ``<namespace>:_cw:rl:<name>:<limit spec>:<identity, percent-encoded>``, e.g.
``shop:_cw:rl:api:tb100p60s:ip%3A203.0.113.9``.  The spec is in the key, so changing a limit starts it afresh
instead of misreading the old state.  :meth:`RateLimiter.reset` deletes an identity's keys by name (no ``KEYS``, no
``SCAN``).

Policy is pure (limits, keys, arguments, what a reply means); :class:`RateLimiter`'s methods only run the call.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import ConfigurationError, InvalidationError, InvalidKeyError
from .failures import SERVER_ERRORS, CircuitOpen
from .server import resp
from .server.scripts import Script

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["ALGORITHMS", "Decision", "Limit", "RateLimiter"]

#: The algorithms, and their code in the script's arguments and in key names.
ALGORITHMS: dict[str, str] = {"fixed_window": "fw", "sliding_window": "sw", "token_bucket": "tb"}
ON_ERROR = ("allow", "deny")
#: Periods shorter than this are refused (keys' TTLs are in milliseconds).
MIN_PERIOD = 0.001
#: Periods longer than this (366 days) are refused: the script's arithmetic stays exact below it.
MAX_PERIOD = 366 * 86400.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEY_MEMO_SIZE = 4096
#: Encoded identities longer than this are shortened (see :func:`identity_token`).
MAX_IDENTITY_CHARS = 256

SCRIPT = Script.beside(__name__.rpartition(".")[0], "ratelimit.lua")


# -- policy: limits, keys, arguments, replies (pure) ----------------------------------------------------------------
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


# -- the limiter: thin sync and async shells around one script call ------------------------------------------------
class RateLimiter:
    """Limits how often each identity (an IP, a user id, an API key...) may do something, on the cache's server.

    Either one limit (``limit`` requests per ``period`` seconds or timedelta, ``algorithm``, ``burst``) or several
    (``limits=[Limit(...), ...]``, all checked in one round trip; a hit is allowed only when every limit allows it,
    and only then consumes them all).  ``name`` separates limiters that share a cache (``"api"``, ``"login"``).
    ``on_error``: ``"allow"`` (fail open, default) or ``"deny"`` (fail closed) when the server cannot be asked.
    See the module's documentation for what each algorithm guarantees.
    """

    def __init__(
        self,
        cache: Cache,
        limit: int | None = None,
        period: float | timedelta | None = None,
        *,
        algorithm: str = "token_bucket",
        burst: int | None = None,
        limits: list[Limit] | tuple[Limit, ...] | None = None,
        name: str = "default",
        on_error: str = "allow",
    ) -> None:
        from .cache import Cache

        if not isinstance(cache, Cache):
            raise ConfigurationError(f"RateLimiter(cache, ...) takes a cachewise.Cache, got {type(cache).__name__}")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigurationError(
                f"limiter name {name!r} is not usable: use 1-64 characters among letters, digits, '_', '.' and '-'"
            )
        if on_error not in ON_ERROR:
            raise ConfigurationError(
                f"on_error={on_error!r}: use 'allow' (fail open: allow requests while the server cannot be asked) or "
                "'deny' (fail closed: refuse them)"
            )
        self._limits = resolve_limits(limit, period, algorithm, burst, limits)
        self._name = name
        self.on_error = on_error
        self._cache = cache
        self._connection = cache.connection
        self._breaker = cache.connection.breaker
        # A hit of cost 1 sends an EVALSHA packed once per identity (protocol bytes, memoised with its keys) and
        # reads the raw reply: no argument encoding or reply callback per hit.  A NOSCRIPT reply gets the script
        # loaded and the hit sent again (Connection.run_script).
        self._prefixes = [f"{cache.keyspace.internal}rl:{name}:{x.spec}:" for x in self._limits]
        self._static = [arg for x in self._limits for arg in x.script_args()]
        self._max_cost = min(x.capacity for x in self._limits)
        self._hit1: list[bytes | int] = [b"1", *self._static]
        self._peek: list[bytes | int] = [b"0", *self._static]
        self._key_memo: dict[str, list[str]] = {}
        self._hit1_memo: dict[str, bytes] = {}
        self._operation = f"ratelimit {name} ({'allowing' if on_error == 'allow' else 'refusing'} requests)"

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self._limits

    @property
    def name(self) -> str:
        return self._name

    def keys(self, identity: str) -> list[str]:
        """The server keys of ``identity``: one per limit (memoised: building them is a good part of a hit's cost)."""
        if type(identity) is not str:
            identity_token(identity)  # raises, saying what to do
        keys = self._key_memo.get(identity)
        if keys is None:
            token = identity_token(identity)
            keys = [prefix + token for prefix in self._prefixes]
            if len(self._key_memo) >= _KEY_MEMO_SIZE:
                self._key_memo.clear()
            self._key_memo[identity] = keys
        return keys

    def _packed_hit1(self, identity: str) -> bytes:
        """The EVALSHA of a hit of cost 1 by ``identity``, in protocol bytes (memoised)."""
        keys = self.keys(identity)
        payload = SCRIPT.evalsha(keys, self._hit1)
        if len(self._hit1_memo) >= _KEY_MEMO_SIZE:
            self._hit1_memo.clear()
        self._hit1_memo[identity] = payload
        return payload

    def _hit_payload(self, identity: str, cost: int) -> bytes:
        """The EVALSHA of a hit, in protocol bytes (memoised per identity for cost 1)."""
        if cost == 1 and type(cost) is int:
            try:
                return self._hit1_memo.get(identity) or self._packed_hit1(identity)
            except TypeError:  # unhashable: keys() says what is wrong with it
                return self._packed_hit1(identity)
        return SCRIPT.evalsha(self.keys(identity), self._args(cost))

    def _args(self, cost: int) -> list[bytes | int]:
        if cost == 1 and type(cost) is int:
            return self._hit1
        return hit_args(cost, self._max_cost, self._static)

    def _degraded(self, exc: BaseException, cost: int) -> Decision:
        self._cache.report.failure(self._operation, exc)
        return degraded(self._limits, self.on_error == "allow", cost, self._breaker.reset_timeout)

    def _not_reset(self, identity: str, exc: BaseException) -> InvalidationError:
        self._cache.report.failure(f"ratelimit {self._name} reset", exc)
        longest = max(x.seconds for x in self._limits)
        return InvalidationError(
            f"rate limiter {self._name!r}: reset({identity!r}) did not reach the server ({type(exc).__name__}: "
            f"{exc}); the identity stays limited until its keys expire (at most {longest:g} s): retry"
        )

    # -- sync ---------------------------------------------------------------------------------------------------
    def _run(self, payload: bytes, cost: int) -> Decision:
        """Send one ``EVALSHA`` of the script (``payload``) and decide from its reply; fails as ``on_error`` says."""
        if not self._breaker.allow():
            return self._degraded(CircuitOpen("circuit breaker open"), cost)
        try:
            reply = self._connection.run_script(payload, SCRIPT)
        except SERVER_ERRORS as exc:
            return self._degraded(exc, cost)
        self._breaker.success()
        return decide(reply, self._limits)

    def hit(self, identity: str, cost: int = 1) -> Decision:
        """Count a request of ``cost`` (default 1) by ``identity``, if every limit allows it; the decision says
        whether it may proceed.  A ``cost`` more than a limit ever allows at once raises :class:`ConfigurationError`.
        """
        return self._run(self._hit_payload(identity, cost), cost)

    def peek(self, identity: str) -> Decision:
        """What a hit of cost 1 by ``identity`` would get now, without counting anything (``remaining`` is what is
        left now)."""
        return self._run(SCRIPT.evalsha(self.keys(identity), self._peek), 0)

    def reset(self, identity: str) -> None:
        """Forget ``identity``'s counts (every limit): one ``DEL`` of its keys, by name.  Raises
        :class:`InvalidationError` when the server could not be reached."""
        keys = self.keys(identity)
        try:
            if not self._breaker.allow():
                raise CircuitOpen("circuit breaker open")
            self._connection.execute_packed(resp.command("DEL", *keys))
        except SERVER_ERRORS as exc:
            raise self._not_reset(identity, exc) from exc
        self._breaker.success()

    # -- async --------------------------------------------------------------------------------------------------
    async def _arun(self, payload: bytes, cost: int) -> Decision:
        if not self._breaker.allow():
            return self._degraded(CircuitOpen("circuit breaker open"), cost)
        try:
            reply = await self._connection.arun_script(payload, SCRIPT)
        except SERVER_ERRORS as exc:
            return self._degraded(exc, cost)
        self._breaker.success()
        return decide(reply, self._limits)

    async def ahit(self, identity: str, cost: int = 1) -> Decision:
        """Async :meth:`hit`."""
        return await self._arun(self._hit_payload(identity, cost), cost)

    async def apeek(self, identity: str) -> Decision:
        """Async :meth:`peek`."""
        return await self._arun(SCRIPT.evalsha(self.keys(identity), self._peek), 0)

    async def areset(self, identity: str) -> None:
        """Async :meth:`reset`."""
        keys = self.keys(identity)
        try:
            if not self._breaker.allow():
                raise CircuitOpen("circuit breaker open")
            await self._connection.aexecute_packed(resp.command("DEL", *keys))
        except SERVER_ERRORS as exc:
            raise self._not_reset(identity, exc) from exc
        self._breaker.success()

    def __repr__(self) -> str:
        return f"RateLimiter({self._name!r}, [{'; '.join(map(str, self._limits))}], on_error={self.on_error!r})"
