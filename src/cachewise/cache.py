"""The :class:`Cache`: cache-aside on a Redis-compatible server, with sync and async twins.

Every decision (keys, TTL, encoding, what a stored value means) is made by pure code in ``keyspace``, ``ttl``,
``serializers``, ``envelope`` and ``store``; the methods here only run the resulting server call with the sync or
the asyncio client, and count what happened.  Reads and writes fail open (a server error is a miss or a skipped
write, counted and logged); invalidations that fail raise :class:`~cachewise.errors.InvalidationError`.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import store
from .envelope import EntryError, payload_of
from .errors import ConfigurationError, InvalidationError
from .failures import SERVER_ERRORS, ErrorLog
from .keyspace import KeySpace, tag_token
from .serializers import Serializer, get_serializer
from .server.connection import ClientOptions, Connection
from .server.urls import redact
from .stats import CacheStats, Counters, StatsRegistry
from .ttl import TTLLike, check_jitter, resolve_ttl_ms

if TYPE_CHECKING:
    from .decorator import CachedDecorator

__all__ = ["MISSING", "Cache"]

T = TypeVar("T")
D = TypeVar("D")


def _tokens(tags: Iterable[str]) -> tuple[str, ...]:
    """Tag tokens for a read (the empty tuple, the common case, costs nothing)."""
    return tuple(tag_token(t) for t in tags) if tags else ()


class _Missing:
    """The type of :data:`MISSING`."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: Returned by ``cache.get(key, default=MISSING)`` on a miss, so that a cached ``None`` is told apart.
MISSING: Any = _Missing()
_RECHECK: Any = object()
_KEY_MEMO_SIZE = 4096


class Cache:
    """A cache in one namespace of one server.

    ``url``: ``embedded://`` (default, a private Valkey started for you), ``embedded:///dir``, ``redis://``,
    ``rediss://`` or ``unix://``; when None, ``CACHEWISE_URL`` decides.  ``namespace`` prefixes every key
    (``namespace:key``) and bounds every invalidation.  ``default_ttl`` is used by writes that give no TTL; without
    it every write must give one.  ``jitter`` (0 ≤ j < 1) spreads TTLs by ±j.  ``serializer``: ``"json"``
    (default) or ``"msgpack"``.  ``timeout``/``connect_timeout`` (seconds) bound each server call.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "cachewise",
        default_ttl: TTLLike | None = None,
        jitter: float = 0.0,
        serializer: str | Serializer | None = None,
        timeout: float = 0.5,
        connect_timeout: float = 0.5,
        max_connections: int = 64,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.keyspace = KeySpace(namespace)
        self.namespace = namespace
        self.serializer = get_serializer(serializer)
        self.jitter = check_jitter(jitter)
        if default_ttl is not None:
            resolve_ttl_ms(default_ttl, None, where="default_ttl")  # validate now, not at the first write
        self.default_ttl = default_ttl
        if timeout <= 0 or connect_timeout <= 0 or max_connections < 1:
            raise ConfigurationError("timeout and connect_timeout must be > 0 s and max_connections >= 1")
        options = ClientOptions(
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            extra=tuple((client_options or {}).items()),
        )
        self._stats = StatsRegistry(namespace)
        self._errors = ErrorLog()
        self._rng = random.Random()
        self.connection = Connection(url, options)
        self._sync = self.connection.sync
        self._key_memo: dict[str | tuple[str, tuple[str, ...]], list[str]] = {}

    # -- pure steps shared by the sync and async paths ---------------------------------------------------------
    def _read_keys(self, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
        """The MGET keys of a read (memoised: building them is most of a hit's own cost)."""
        memo_key = (key, tag_tokens) if tag_tokens else key
        keys = self._key_memo.get(memo_key)
        if keys is None:
            keys = store.read_keys(self.keyspace, key, tag_tokens)
            if len(self._key_memo) >= _KEY_MEMO_SIZE:
                self._key_memo.clear()
            self._key_memo[memo_key] = keys
        return keys

    def _verdict(self, reply: list[Any], tag_tokens: tuple[str, ...], scope: Counters | None, seconds: float) -> Any:
        """The value a read's reply holds; MISSING for a miss, a stale or an unreadable entry; RECHECK when the
        entry has tags the reader did not name (then the Lua read decides)."""
        verdict, start = store.judge(reply, tag_tokens)
        if verdict == store.HIT:
            return self._decode(reply[0], start, scope, seconds)
        if verdict == store.RECHECK:
            self._stats.roundtrip(scope, seconds)
            return _RECHECK
        if verdict == store.INVALID:
            self._invalid(scope, "not a cachewise entry of this format")
        self._stats.read(scope, False, seconds)
        return MISSING

    def _decode(self, raw: bytes, start: int, scope: Counters | None, seconds: float) -> Any:
        try:
            if raw[3:4] != self.serializer.code:
                raise EntryError(f"entry written with serializer code {raw[3:4]!r}")
            value = self.serializer.loads(raw[start:])
        except Exception as exc:  # corrupt payload or another serializer's: a miss, never an error
            self._invalid(scope, str(exc))
            self._stats.read(scope, False, seconds)
            return MISSING
        self._stats.read(scope, True, seconds)
        return value

    def _rechecked(self, raw: bytes | None, scope: Counters | None, seconds: float) -> Any:
        """The value of a Lua read's reply (the script already checked every stamp)."""
        if raw is None:
            self._stats.read(scope, False, seconds)
            return MISSING
        try:
            _, payload = payload_of(raw)
        except EntryError as exc:
            self._invalid(scope, str(exc))
            self._stats.read(scope, False, seconds)
            return MISSING
        return self._decode(raw, len(raw) - len(payload), scope, seconds)

    def _invalid(self, scope: Counters | None, why: str) -> None:
        self._stats.add(scope, "invalid")
        self._errors.log(
            "invalid",
            f"unreadable value under a key of namespace {self.namespace!r} ({why}): treated as a miss, it will be "
            "replaced",
            logging.INFO,
        )

    def _write_call(
        self, key: str, value: Any, ttl: TTLLike | None, tokens: tuple[str, ...], jitter: float | None, where: str
    ) -> store.Call:
        """The server call that stores ``value``; raises for programmer errors (no TTL, unserialisable)."""
        ttl_ms = resolve_ttl_ms(
            ttl,
            self.default_ttl,
            jitter=self.jitter if jitter is None else check_jitter(jitter),
            rng=self._rng,
            where=where,
        )
        payload = self.serializer.dumps(value)
        return store.write(self.keyspace, key, self.serializer.code, payload, ttl_ms, tokens)

    def _failed(self, operation: str, exc: BaseException, scope: Counters | None) -> None:
        self._stats.add(scope, "errors")
        self._errors.error(operation, exc)

    def _counters(self, key: str | None) -> list[str]:
        return [self.keyspace.namespace_version if key is None else self.keyspace.group_version(key)]

    def _tag_counters(self, tags: Iterable[str]) -> list[str]:
        counters = [self.keyspace.tag_version(t) for t in tags]
        if not counters:
            raise ValueError("invalidate_tags() needs at least one tag")
        return counters

    # -- sync ----------------------------------------------------------------------------------------------
    def _call(self, call: store.Call, scope: Counters | None) -> Any:
        started = time.perf_counter()
        try:
            return call.script(self._sync, call.keys, call.args)
        finally:
            self._stats.roundtrip(scope, time.perf_counter() - started)

    def _read(self, key: str, scope: Counters | None, tag_tokens: tuple[str, ...] = ()) -> Any:
        keys = self._read_keys(key, tag_tokens)
        started = time.perf_counter()
        try:
            reply = self._sync.execute_command("MGET", *keys)  # type: ignore[no-untyped-call]
            value = self._verdict(reply, tag_tokens, scope, time.perf_counter() - started)
            if value is _RECHECK:
                call = store.read(self.keyspace, key)
                started = time.perf_counter()
                raw = call.script(self._sync, call.keys, call.args)
                value = self._rechecked(raw, scope, time.perf_counter() - started)
        except SERVER_ERRORS as exc:
            self._failed("read", exc, scope)
            self._stats.read(scope, False, time.perf_counter() - started)
            return MISSING
        return value

    def _store(self, call: store.Call, scope: Counters | None) -> bool:
        try:
            self._call(call, scope)
        except SERVER_ERRORS as exc:
            self._failed("write", exc, scope)
            return False
        self._stats.add(scope, "sets")
        return True

    def _invalidate(self, call: store.Call, what: str) -> Any:
        try:
            return self._call(call, None)
        except SERVER_ERRORS as exc:
            self._failed(what, exc, None)
            raise InvalidationError(
                f"{what} did not reach the server ({type(exc).__name__}: {exc}); the cache may serve the old "
                "value until its TTL ends: retry the invalidation"
            ) from exc

    @overload
    def get(self, key: str, *, tags: Iterable[str] = ()) -> Any: ...
    @overload
    def get(self, key: str, default: D, *, tags: Iterable[str] = ()) -> Any | D: ...
    def get(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """The cached value, or ``default`` on a miss (pass ``default=MISSING`` to tell a cached None apart).

        ``tags``: the tags the entry was written with, when you know them; the read is then one ``MGET``.  Without
        them a tagged entry costs a second round trip (a Lua read that looks its tags up itself).
        """
        value = self._read(key, None, _tokens(tags))
        return default if value is MISSING else value

    def set(
        self,
        key: str,
        value: Any,
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
    ) -> bool:
        """Store ``value`` for ``ttl``; False (counted, logged) when the server could not take it."""
        return self._store(self._write_call(key, value, ttl, _tokens(tags), jitter, f"cache.set({key!r})"), None)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed.  :class:`InvalidationError` when the server is unreachable."""
        entry = self.keyspace.entry(key)
        started = time.perf_counter()
        try:
            removed = self._sync.delete(entry)
        except SERVER_ERRORS as exc:
            self._failed("delete", exc, None)
            raise InvalidationError(
                f"delete({key!r}) did not reach the server ({type(exc).__name__}); the old value may be served "
                "until its TTL ends: retry"
            ) from exc
        finally:
            self._stats.roundtrip(None, time.perf_counter() - started)
        self._stats.add(None, "deletes")
        return bool(removed)

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
    ) -> T:
        """Cache-aside: the cached value on a hit; on a miss, ``loader()``'s value, stored and returned."""
        return self._get_or_load(key, loader, ttl, _tokens(tags), jitter, None, None)

    def _get_or_load(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: TTLLike | None,
        tokens: tuple[str, ...],
        jitter: float | None,
        scope: Counters | None,
        where: str | None,
    ) -> T:
        value = self._read(key, scope, tokens)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]
        started = time.perf_counter()
        value = loader()
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            where = where or f"cache.get_or_set({key!r})"
            raise TypeError(f"{where}: the loader is async; use aget_or_set() or an async function")
        self._stats.add(scope, "loads")
        self._stats.add(scope, "load_seconds", time.perf_counter() - started)
        self._store(self._write_call(key, value, ttl, tokens, jitter, where or f"cache.get_or_set({key!r})"), scope)
        return value

    def bump_version(self, group: str | None = None) -> int:
        """Make every key of ``group`` (its first ``:`` segment, e.g. ``"product"``) a miss at once; with no
        group, every key of the namespace.  One ``INCR``, no SCAN.  Returns 0 when nothing was cached under it."""
        return int(self._invalidate(store.bump(self._counters(group)), "bump_version"))

    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry written with any of ``tags`` a miss at once; returns how many of the tags were in use."""
        return int(self._invalidate(store.bump(self._tag_counters(tags)), "invalidate_tags"))

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires on the server; None when it is not there (or the server is not)."""
        try:
            left = self._sync.pttl(self.keyspace.entry(key))
        except SERVER_ERRORS as exc:
            self._failed("ttl", exc, None)
            return None
        return left / 1000 if left >= 0 else None

    def clear(self) -> int:
        """Delete every key of this namespace (SCAN + UNLINK in batches); returns how many were deleted.

        O(number of keys), unlike :meth:`bump_version`, which makes them all misses with one command: use this to
        free the memory (tests, a demo, a namespace being retired), not to invalidate.
        """
        deleted = 0
        try:
            for batch in self._scan_batches(self._sync.scan_iter(match=self.keyspace.pattern, count=1000)):
                deleted += int(self._sync.unlink(*batch))
        except SERVER_ERRORS as exc:
            self._failed("clear", exc, None)
            raise InvalidationError(f"clear() did not finish ({type(exc).__name__}: {exc}): retry") from exc
        return deleted

    def _scan_batches(self, keys: Iterable[bytes], size: int = 500) -> Iterable[list[bytes]]:
        batch: list[bytes] = []
        for key in keys:
            if not self.keyspace.owns(key.decode(errors="replace")):  # never touch another namespace
                continue
            batch.append(key)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- async ---------------------------------------------------------------------------------------------
    async def _acall(self, call: store.Call, scope: Counters | None) -> Any:
        started = time.perf_counter()
        try:
            return await self.connection.ascript(call.script, call.keys, call.args)
        finally:
            self._stats.roundtrip(scope, time.perf_counter() - started)

    async def _aread(self, key: str, scope: Counters | None, tag_tokens: tuple[str, ...] = ()) -> Any:
        keys = self._read_keys(key, tag_tokens)
        started = time.perf_counter()
        try:
            reply = await self.connection.acommand("MGET", *keys)
            value = self._verdict(reply, tag_tokens, scope, time.perf_counter() - started)
            if value is _RECHECK:
                call = store.read(self.keyspace, key)
                started = time.perf_counter()
                raw = await self.connection.ascript(call.script, call.keys, call.args)
                value = self._rechecked(raw, scope, time.perf_counter() - started)
        except SERVER_ERRORS as exc:
            self._failed("read", exc, scope)
            self._stats.read(scope, False, time.perf_counter() - started)
            return MISSING
        return value

    async def _astore(self, call: store.Call, scope: Counters | None) -> bool:
        try:
            await self._acall(call, scope)
        except SERVER_ERRORS as exc:
            self._failed("write", exc, scope)
            return False
        self._stats.add(scope, "sets")
        return True

    async def _ainvalidate(self, call: store.Call, what: str) -> Any:
        try:
            return await self._acall(call, None)
        except SERVER_ERRORS as exc:
            self._failed(what, exc, None)
            raise InvalidationError(
                f"{what} did not reach the server ({type(exc).__name__}: {exc}); the cache may serve the old "
                "value until its TTL ends: retry the invalidation"
            ) from exc

    async def aget(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """Async :meth:`get`."""
        value = await self._aread(key, None, _tokens(tags))
        return default if value is MISSING else value

    async def aset(
        self,
        key: str,
        value: Any,
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
    ) -> bool:
        """Async :meth:`set`."""
        return await self._astore(
            self._write_call(key, value, ttl, _tokens(tags), jitter, f"cache.aset({key!r})"), None
        )

    async def adelete(self, key: str) -> bool:
        """Async :meth:`delete`."""
        entry = self.keyspace.entry(key)
        started = time.perf_counter()
        try:
            removed = await self.connection.acommand("DEL", entry)
        except SERVER_ERRORS as exc:
            self._failed("delete", exc, None)
            raise InvalidationError(
                f"adelete({key!r}) did not reach the server ({type(exc).__name__}); the old value may be served "
                "until its TTL ends: retry"
            ) from exc
        finally:
            self._stats.roundtrip(None, time.perf_counter() - started)
        self._stats.add(None, "deletes")
        return bool(removed)

    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], T | Awaitable[T]],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
    ) -> T:
        """Async :meth:`get_or_set`; ``loader`` may be a plain or an async callable."""
        return await self._aget_or_load(key, loader, ttl, _tokens(tags), jitter, None, None)

    async def _aget_or_load(
        self,
        key: str,
        loader: Callable[[], T | Awaitable[T]],
        ttl: TTLLike | None,
        tokens: tuple[str, ...],
        jitter: float | None,
        scope: Counters | None,
        where: str | None,
    ) -> T:
        value = await self._aread(key, scope, tokens)
        if value is not MISSING:
            return value  # type: ignore[no-any-return]
        started = time.perf_counter()
        value = loader()
        if inspect.isawaitable(value):
            value = await value
        self._stats.add(scope, "loads")
        self._stats.add(scope, "load_seconds", time.perf_counter() - started)
        await self._astore(
            self._write_call(key, value, ttl, tokens, jitter, where or f"cache.aget_or_set({key!r})"), scope
        )
        return value  # type: ignore[no-any-return]

    async def abump_version(self, group: str | None = None) -> int:
        """Async :meth:`bump_version`."""
        return int(await self._ainvalidate(store.bump(self._counters(group)), "bump_version"))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Async :meth:`invalidate_tags`."""
        return int(await self._ainvalidate(store.bump(self._tag_counters(tags)), "invalidate_tags"))

    async def attl(self, key: str) -> float | None:
        """Async :meth:`ttl`."""
        try:
            left = await self.connection.acommand("PTTL", self.keyspace.entry(key))
        except SERVER_ERRORS as exc:
            self._failed("ttl", exc, None)
            return None
        return left / 1000 if left >= 0 else None

    # -- decorator, stats, life cycle ------------------------------------------------------------------------
    def cached(
        self,
        ttl: TTLLike | None = None,
        key: str | None = None,
        tags: Iterable[str] = (),
        *,
        jitter: float | None = None,
    ) -> CachedDecorator:
        """Decorate a ``def`` or ``async def`` (function or method) with cache-aside.

        ``key``: a template filled from the bound arguments (``"product:{product_id}"``); by default the
        function's qualified name plus a digest of its arguments.  ``tags``: names (or templates) that
        :meth:`invalidate_tags` can later invalidate.
        """
        from .decorator import CachedDecorator

        return CachedDecorator(self, ttl=ttl, key=key, tags=tuple(tags), jitter=jitter)

    def stats(self) -> CacheStats:
        """Hits, misses, errors, loads and timings for the namespace and each cached function."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def _scope(self, name: str) -> Counters | None:
        return self._stats.scope(name)

    @property
    def url(self) -> str:
        """The server URL, with any password hidden."""
        return redact(self.connection.address.url)

    @property
    def closed(self) -> bool:
        return self.connection.closed

    def close(self) -> None:
        """Close the connections; stops the embedded server when no other cache in the process uses it."""
        self.connection.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (also closes this event loop's asyncio connections)."""
        await self.connection.aclose()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Cache({self.url!r}, namespace={self.namespace!r})"
