"""``@cache.cached(...)``: cache-aside for ``def`` and ``async def`` functions and methods.

The wrapper builds the call's key with :class:`~cachewise.keys.CallKey` and hands the rest to the cache's
cache-aside path, so a decorated function behaves exactly like ``cache.get_or_set``.  It exposes
``.key_for(...)``, ``.invalidate(...)`` (sync functions) / ``.ainvalidate(...)`` (async functions), and
``.invalidate_all()`` when every key of the function falls in one version group.  On a method, access through an
instance binds ``self``: ``obj.method.invalidate(42)``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from .engine import Engine, Site, ops
from .engine.stampede import Protection
from .errors import ConfigurationError
from .keys import CallKey, memo_type
from .report import Reporter
from .ttl import TTLLike, check_jitter, resolve_ttl_ms


class Host(Protocol):
    """What a decorated function needs of its cache (a :class:`~cachewise.Cache`)."""

    default_ttl: TTLLike | None
    engine: Engine
    report: Reporter

    def delete(self, key: str) -> bool: ...
    async def adelete(self, key: str) -> bool: ...
    def bump_version(self, group: str | None = None) -> int: ...
    async def abump_version(self, group: str | None = None) -> int: ...


__all__ = ["AsyncCachedFunction", "CachedDecorator", "CachedFunction", "Host"]

P = ParamSpec("P")
R = TypeVar("R")


class CachedDecorator:
    """What ``cache.cached(...)`` returns: apply it to a function."""

    def __init__(
        self,
        cache: Host,
        *,
        ttl: TTLLike | None,
        key: str | None,
        tags: tuple[str, ...],
        jitter: float | None,
        protection: Protection,
        local: bool = True,
    ) -> None:
        if not isinstance(local, bool):
            raise ConfigurationError(f"local={local!r}: use True (use the cache's local tier, if any) or False")
        resolve_ttl_ms(ttl, cache.default_ttl, where="@cache.cached(...)")  # no TTL: fail at decoration
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigurationError(f"key= must be a non-empty template string, got {key!r}")
        self.cache = cache
        self.ttl = ttl
        self.key = key
        self.tags = tags
        self.jitter = None if jitter is None else check_jitter(jitter)
        self.protection = protection
        self.local = local

    def __call__(self, fn: Callable[P, R]) -> CachedFunction[P, R]:
        if isinstance(fn, (staticmethod, classmethod)):
            raise ConfigurationError(
                "put @cache.cached(...) below @staticmethod/@classmethod, so that it wraps the function itself"
            )
        kind = AsyncCachedFunction if inspect.iscoroutinefunction(fn) else CachedFunction
        return kind(self, fn)


class CachedFunction(Generic[P, R]):
    """A cached ``def``; call it as the original function."""

    #: Whether a refresh runs in the background (async functions) rather than in the caller.
    _background = False

    def __init__(self, spec: CachedDecorator, fn: Callable[P, R], bound_to: Any = None) -> None:
        self._spec = spec
        self._fn = fn
        self._cache = spec.cache
        self._call_key = CallKey(fn, spec.key, spec.tags)
        self._name = self._call_key.name
        self._scope = self._cache.report.scope(self._name)
        self._self = bound_to
        #: The keys of earlier calls by their arguments (None on a method bound to an instance: ``self`` may be in
        #: the template).
        self._memo: dict[tuple[Any, ...], tuple[str, tuple[str, ...]]] | None = (
            self._call_key.memo if bound_to is None else None
        )
        #: What every call shares (a hit builds nothing more than its key).
        self._site = Site(spec.ttl, spec.jitter, self._scope, self._name, spec.protection, self._background, spec.local)
        local = self._cache.engine.local
        #: The local tier's look-up, when this function uses one (:meth:`~cachewise.engine.locals.LocalReads.lookup`:
        #: a local hit answers without a call into the engine).
        self._lookup = local.lookup if local is not None and spec.local else None
        self._record: Callable[[], int] = local.recorder(self._scope) if local is not None else int  # int: unused
        self._protection = spec.protection
        functools.update_wrapper(self, fn)

    # -- keys -------------------------------------------------------------------------------------------------
    def _args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if self._self is None else (self._self, *args)

    def _keyed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The key and tag tokens of a call: looked up in the memo when the call may be (see :func:`memo_type`),
        else built."""
        memo = self._memo
        exact = memo is not None and not kwargs
        if exact and (memo_type(type(args[0])) if len(args) == 1 else all(map(memo_type, map(type, args)))):
            return memo.get(args) or self._call_key.memorize(args)  # type: ignore[union-attr]
        return self._call_key.key_and_tokens(self._args(args), kwargs)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key (without the namespace) of a call with these arguments."""
        return self._keyed(args, kwargs)[0]

    @property
    def group(self) -> str | None:
        """The version group of every key of this function, when there is one."""
        return self._call_key.group

    def _group_or_error(self) -> str:
        group = self._call_key.group
        if group is None:
            raise ConfigurationError(
                f"the keys of {self._call_key.name} (template {self._spec.key!r}) do not share a fixed first "
                "segment; give them a tag and call cache.invalidate_tags(tag) instead"
            )
        return group

    # -- calls ------------------------------------------------------------------------------------------------
    def _write(self, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The flow of a write-through of ``value`` as the result of a call with these arguments."""
        key, tags = self._keyed(args, kwargs)
        spec = self._spec
        return ops.write(
            self._cache.engine.context, key, value, spec.ttl, tags, spec.jitter, self._name,
            grace=spec.protection.stale_ttl, scope=self._scope,
        )  # fmt: skip

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        memo, lookup = self._memo, self._lookup
        # _keyed's memo look-up for the commonest call (one exact int/str argument), inline: a repeat builds nothing.
        one = memo is not None and not kwargs and len(args) == 1 and memo_type(type(args[0]))
        key, tags = (one and memo.get(args)) or self._keyed(args, kwargs)  # type: ignore[union-attr]
        ticket = None if lookup is None else lookup(key, tags, self._record, self._protection)
        if type(ticket) is tuple:  # a local hit
            return ticket[0]  # type: ignore[no-any-return]
        fn, full = self._fn, args if self._self is None else (self._self, *args)
        return self._cache.engine.get_or_load(self._site, key, tags, lambda: fn(*full, **kwargs), ticket)  # type: ignore[no-any-return]

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of a call with these arguments; True when there was one."""
        return self._cache.delete(self.key_for(*args, **kwargs))

    def set(self, value: Any, /, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Write-through: store ``value`` as the result of a call with these arguments, with this function's TTL
        and tags (after writing the database, so that the next call needs no load)."""
        return bool(self._cache.engine.run(self._write(value, args, kwargs)))

    def invalidate_all(self) -> None:
        """Make every cached result of this function a miss (a version bump of its key group)."""
        self._cache.bump_version(self._group_or_error())

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return self._bind(instance)

    def _bind(self, instance: Any) -> CachedFunction[P, R]:
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._self = instance
        bound._memo = None
        return bound

    def __repr__(self) -> str:
        return f"<cached {self._call_key.name} in {self._cache!r}>"


class AsyncCachedFunction(CachedFunction[P, R]):
    """A cached ``async def``; await it as the original coroutine function."""

    _background = True

    def __init__(self, spec: CachedDecorator, fn: Callable[P, R], bound_to: Any = None) -> None:
        super().__init__(spec, fn, bound_to)
        # Frameworks (FastAPI, Starlette, asyncio) must see a coroutine function.
        if hasattr(inspect, "markcoroutinefunction"):
            inspect.markcoroutinefunction(self)
        else:  # Python < 3.12
            self._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[override]
        memo, lookup = self._memo, self._lookup
        one = memo is not None and not kwargs and len(args) == 1 and memo_type(type(args[0]))
        key, tags = (one and memo.get(args)) or self._keyed(args, kwargs)  # type: ignore[union-attr]
        ticket = None if lookup is None else lookup(key, tags, self._record, self._protection)
        if type(ticket) is tuple:
            return ticket[0]  # type: ignore[no-any-return]
        fn, full = self._fn, args if self._self is None else (self._self, *args)
        return await self._cache.engine.aget_or_load(self._site, key, tags, lambda: fn(*full, **kwargs), ticket)  # type: ignore[no-any-return]

    async def aset(self, value: Any, /, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Async :meth:`set` (write-through)."""
        return bool(await self._cache.engine.arun(self._write(value, args, kwargs)))

    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of a call with these arguments; True when there was one."""
        return await self._cache.adelete(self.key_for(*args, **kwargs))

    async def ainvalidate_all(self) -> None:
        """Make every cached result of this function a miss."""
        await self._cache.abump_version(self._group_or_error())
