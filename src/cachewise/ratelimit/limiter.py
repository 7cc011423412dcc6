""":class:`RateLimiter`: thin sync and async shells around one call of ``ratelimit.lua`` per hit.

The policy (limits, keys, arguments, what a reply means) is pure (:mod:`cachewise.ratelimit.policy`); a hit is one
ready :class:`~cachewise.transport.command.Command` (memoised per identity for a hit of cost 1: no argument encoding
per hit) sent through the cache's :class:`~cachewise.executor.Executor`, which checks the circuit breaker, loads the
script after a ``NOSCRIPT`` and counts any failure; the limiter only decides what a failure means (``on_error``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidationError
from ..executor import Failed
from ..stats import FOLD_AT
from ..transport.command import Command
from ..transport.scripts import Script
from .policy import ON_ERROR, Decision, Limit, decide, degraded, hit_args, identity_token, resolve_limits

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = ["SCRIPT", "RateLimiter"]

SCRIPT = Script.beside(__package__ or __name__, "ratelimit.lua")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEY_MEMO_SIZE = 4096


class RateLimiter:
    """Limits how often each identity (an IP, a user id, an API key...) may do something, on the cache's server.

    Either one limit (``limit`` requests per ``period`` seconds or timedelta, ``algorithm``, ``burst``) or several
    (``limits=[Limit(...), ...]``, all checked in one round trip; a hit is allowed only when every limit allows it,
    and only then consumes them all).  ``name`` separates limiters that share a cache (``"api"``, ``"login"``).
    ``on_error``: ``"allow"`` (fail open, default) or ``"deny"`` (fail closed) when the server cannot be asked.
    See :mod:`cachewise.ratelimit` for what each algorithm guarantees.
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
        from ..cache import Cache

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
        self.cache = cache
        self._executor = cache.executor
        self._space = cache.keyspace
        self._static = [arg for x in self._limits for arg in x.script_args()]
        self._max_cost = min(x.capacity for x in self._limits)
        self._hit1: list[bytes | int] = [b"1", *self._static]
        self._peek: list[bytes | int] = [b"0", *self._static]
        self._key_memo: dict[str, list[str]] = {}
        self._hit1_memo: dict[str, Command] = {}
        self._operation = f"ratelimit {name} ({'allowing' if on_error == 'allow' else 'refusing'} requests)"
        self._decisions = cache.report.decisions
        self._fold = cache.report.fold

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self._limits

    @property
    def name(self) -> str:
        return self._name

    # -- pure: keys, commands, what a reply means ---------------------------------------------------------------
    def keys(self, identity: str) -> list[str]:
        """The server keys of ``identity``: one per limit (memoised: building them is a good part of a hit's cost)."""
        if type(identity) is not str:
            identity_token(identity)  # raises, saying what to do
        keys = self._key_memo.get(identity)
        if keys is None:
            token = identity_token(identity)
            keys = [self._space.ratelimit(self._name, x.spec, token) for x in self._limits]
            if len(self._key_memo) >= _KEY_MEMO_SIZE:
                self._key_memo.clear()
            self._key_memo[identity] = keys
        return keys

    def _call(self, identity: str, args: list[Any]) -> Command:
        return Command.script(self._operation, SCRIPT, self.keys(identity), args)

    def _hit1_command(self, identity: str) -> Command:
        command = self._call(identity, self._hit1)
        if len(self._hit1_memo) >= _KEY_MEMO_SIZE:
            self._hit1_memo.clear()
        self._hit1_memo[identity] = command
        return command

    def _hit(self, identity: str, cost: int) -> Command:
        """The script call of a hit (memoised per identity for cost 1)."""
        if cost == 1 and type(cost) is int:
            try:
                return self._hit1_memo.get(identity) or self._hit1_command(identity)
            except TypeError:  # unhashable: keys() says what is wrong with it
                return self._hit1_command(identity)
        return self._call(identity, hit_args(cost, self._max_cost, self._static))

    def _decided(self, reply: Any, cost: int) -> Decision:
        """The decision a reply means; a failure (already counted and logged) follows ``on_error``."""
        return self._degraded(cost) if type(reply) is Failed else decide(reply, self._limits)

    def _counted(self, reply: Any, cost: int) -> Decision:
        """The decision of a hit's reply (:meth:`_decided`, inline), counted in the cache's stats
        (``stats().limits[name]``; :meth:`~cachewise.stats.StatsRegistry.decided`, inline)."""
        decision = self._degraded(cost) if type(reply) is Failed else decide(reply, self._limits)
        decisions = self._decisions
        decisions.append((self._name, decision.allowed))
        if len(decisions) > FOLD_AT:
            self._fold()
        return decision

    def _degraded(self, cost: int) -> Decision:
        """The decision when the server did not answer (the failure already counted and logged): ``on_error``'s."""
        return degraded(self._limits, self.on_error == "allow", cost, self._executor.breaker.reset_timeout)

    def _reset(self, identity: str) -> Command:
        keys = self.keys(identity)
        return Command.plain(f"ratelimit {self._name} reset", "DEL", *keys, keys=keys)

    def _was_reset(self, identity: str, reply: Any) -> None:
        if type(reply) is Failed:
            exc = reply.error
            longest = max(x.seconds for x in self._limits)
            raise InvalidationError(
                f"rate limiter {self._name!r}: reset({identity!r}) did not reach the server ({type(exc).__name__}: "
                f"{exc}); the identity stays limited until its keys expire (at most {longest:g} s): retry"
            ) from exc

    # -- the shells -------------------------------------------------------------------------------------------------
    def hit(self, identity: str, cost: int = 1) -> Decision:
        """Count a request of ``cost`` (default 1) by ``identity``, if every limit allows it; the decision says
        whether it may proceed.  A ``cost`` more than a limit ever allows at once raises :class:`ConfigurationError`.
        """
        try:  # the memo of cost-1 hits, inline (KeyError: a new identity; TypeError: an unhashable one)
            command = self._hit1_memo[identity] if cost == 1 and type(cost) is int else self._hit(identity, cost)
        except (KeyError, TypeError):
            command = self._hit(identity, cost)
        return self._counted(self._executor.attempt(command), cost)

    def peek(self, identity: str) -> Decision:
        """What a hit of cost 1 by ``identity`` would get now, without counting anything (``remaining`` is what is
        left now)."""
        return self._decided(self._executor.attempt(self._call(identity, self._peek)), 0)

    def reset(self, identity: str) -> None:
        """Forget ``identity``'s counts (every limit): one ``DEL`` of its keys, by name.  Raises
        :class:`InvalidationError` when the server could not be reached."""
        self._was_reset(identity, self._executor.attempt(self._reset(identity)))

    async def ahit(self, identity: str, cost: int = 1) -> Decision:
        """Async :meth:`hit`."""
        return self._counted(await self._executor.aattempt(self._hit(identity, cost)), cost)

    async def apeek(self, identity: str) -> Decision:
        """Async :meth:`peek`."""
        return self._decided(await self._executor.aattempt(self._call(identity, self._peek)), 0)

    async def areset(self, identity: str) -> None:
        """Async :meth:`reset`."""
        self._was_reset(identity, await self._executor.aattempt(self._reset(identity)))

    def __repr__(self) -> str:
        return f"RateLimiter({self._name!r}, [{'; '.join(map(str, self._limits))}], on_error={self.on_error!r})"
