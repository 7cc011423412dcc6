"""The :class:`Cache`: cache-aside on a Redis-compatible server, with sync and async twins.

Decisions are made by pure code: keys (``keyspace``), TTLs (``ttl``), bytes (``serializers``, ``envelope``), what a
reply means (``store``, ``reads``), and what a miss leads to (``flows``, ``stampede``).  The methods here run the
resulting server calls with the sync or the asyncio client, and count.  Reads and writes fail open (a server error
is a miss or a skipped write, counted and logged); invalidations that fail raise
:class:`~cachewise.errors.InvalidationError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import drivers, flows, store
from .errors import ConfigurationError, InvalidationError, SerializationError
from .failures import SERVER_ERRORS, CircuitOpen, ErrorLog
from .keyspace import KeySpace, tag_token
from .lease_keeper import Held, LeaseKeeper
from .local_flights import LocalFlights
from .reads import FAILED, MISSING, NO_HEAD, RECHECK, EntryReader
from .report import Reporter
from .serializers import Serializer, get_serializer
from .server import resp
from .server.connection import ClientOptions, Connection
from .server.urls import redact
from .signing import Signer
from .stampede import DEFAULT, LoadTimes, Protection
from .stats import CacheStats, Counters, StatsRegistry
from .ttl import TTLLike, check_jitter, resolve_ttl_ms

if TYPE_CHECKING:
    from .decorator import CachedDecorator

__all__ = ["MISSING", "Cache"]

T = TypeVar("T")
D = TypeVar("D")
_KEY_MEMO_SIZE = 4096


def _tokens(tags: Iterable[str]) -> tuple[str, ...]:
    """Tag tokens for a read or a write (the empty tuple, the common case, costs nothing)."""
    return tuple(tag_token(t) for t in tags) if tags else ()


class Cache:
    """A cache in one namespace of one server.

    ``url``: ``embedded://`` (default, a private Valkey started for you), ``embedded:///dir``, ``redis://``,
    ``rediss://`` or ``unix://``; when None, ``CACHEWISE_URL`` decides.  ``namespace`` prefixes every key
    (``namespace:key``) and bounds every invalidation.  ``default_ttl`` is used by writes that give no TTL; without it
    every write must give one.  ``jitter`` (0 ≤ j < 1) spreads TTLs by ±j.  ``serializer``: ``"json"`` (default) or
    ``"msgpack"``.  ``protection``: how cache-aside reads protect the origin (single flight, early refresh, stale
    serving; see :class:`~cachewise.stampede.Protection`).  ``timeout``/``connect_timeout`` (seconds) bound each
    server call, and ``breaker_threshold`` failures in a row open the circuit breaker for ``breaker_reset`` seconds
    (calls skip the server meanwhile).  ``max_value_bytes``: larger values are not cached (the caller still gets
    them).  ``signing_key``: HMAC-sign every value and never decode one that does not verify (required for
    ``serializer="pickle"``).  Passwords in URLs never appear in logs, reprs or errors.  ``pool_timeout`` bounds
    the wait for a free connection in a burst of more than ``max_connections`` callers.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "cachewise",
        default_ttl: TTLLike | None = None,
        jitter: float = 0.0,
        serializer: str | Serializer | None = None,
        protection: Protection = DEFAULT,
        timeout: float = 0.5,
        connect_timeout: float = 0.5,
        pool_timeout: float = 2.0,
        max_connections: int = 64,
        breaker_threshold: int = 5,
        breaker_reset: float = 1.0,
        max_value_bytes: int | None = 1 << 20,
        signing_key: str | bytes | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.keyspace = KeySpace(namespace)
        self.namespace = namespace
        self.serializer = get_serializer(serializer, signed=signing_key is not None)
        self._signer = Signer(signing_key) if signing_key is not None else None
        if max_value_bytes is not None and max_value_bytes < 1:
            raise ConfigurationError("max_value_bytes must be None (no limit) or a positive number of bytes")
        self.max_value_bytes = max_value_bytes
        self.jitter = check_jitter(jitter)
        if default_ttl is not None:
            resolve_ttl_ms(default_ttl, None, where="default_ttl")  # validate now, not at the first write
        self.default_ttl = default_ttl
        if not isinstance(protection, Protection):
            raise ConfigurationError("protection= takes a cachewise.Protection(...)")
        self.protection = protection
        if timeout <= 0 or connect_timeout <= 0 or pool_timeout <= 0 or max_connections < 1:
            raise ConfigurationError("timeouts must be > 0 s and max_connections >= 1")
        options = ClientOptions(
            timeout=timeout,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            max_connections=max_connections,
            breaker_threshold=breaker_threshold,
            breaker_reset=breaker_reset,
            extra=tuple((client_options or {}).items()),
        )
        self._stats = StatsRegistry(namespace)
        self._errors = ErrorLog()
        self._reader = EntryReader(namespace, self.serializer, self._stats, self._errors, self._signer)
        self._rng = random.Random()
        self._load_times: dict[str | None, LoadTimes] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._flights = LocalFlights()
        self._keeper = LeaseKeeper(self._renew_leases)
        self._protections: dict[tuple[Protection, tuple[tuple[str, Any], ...]], Protection] = {}
        self.connection = Connection(url, options)
        self._breaker = self.connection.breaker
        #: What components built on this cache (rate limiter, sessions, feature store, yours) report through.
        self.report = Reporter(self._stats, self._errors, self._breaker)
        self._key_memo: dict[str | tuple[str, tuple[str, ...]], tuple[list[str], bytes]] = {}

    # -- pure steps shared by the sync and async paths and the flows ---------------------------------------------
    def _read_plan(self, key: str, tag_tokens: tuple[str, ...] = ()) -> tuple[list[str], bytes]:
        """The MGET keys of a read and the MGET itself in protocol bytes (memoised: building them is most of a
        hit's own cost)."""
        memo_key = (key, tag_tokens) if tag_tokens else key
        plan = self._key_memo.get(memo_key)
        if plan is None:
            keys = store.read_keys(self.keyspace, key, tag_tokens)
            plan = (keys, resp.command("MGET", *keys))
            if len(self._key_memo) >= _KEY_MEMO_SIZE:
                self._key_memo.clear()
            self._key_memo[memo_key] = plan
        return plan

    def _read_keys(self, key: str, tag_tokens: tuple[str, ...] = ()) -> list[str]:
        """The MGET keys of a read."""
        return self._read_plan(key, tag_tokens)[0]

    def _write_call(
        self,
        key: str,
        value: Any,
        ttl: TTLLike | None,
        tokens: tuple[str, ...],
        jitter: float | None,
        where: str,
        *,
        grace: float = 0.0,
        load_ms: int = 0,
        token: str = "",
        version: int | None = None,
    ) -> store.Call | None:
        """The server call that stores ``value``, or None when it is too large to cache (counted and logged; the
        caller still gets the value).  Raises for programmer errors (no TTL, unserialisable), naming ``where``."""
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
            self._oversize(key, len(payload))
            return None
        if self._signer is not None:
            payload = self._signer.sign(self.keyspace.entry(key), self.serializer.code, payload)
        return store.write(
            self.keyspace,
            key,
            self.serializer.code,
            payload,
            ttl_ms,
            tokens,
            grace_ms=int(grace * 1000),
            load_ms=load_ms,
            token=token,
            version=version,
        )

    def _oversize(self, key: str, size: int) -> None:
        self._stats.add(None, "oversize")
        self._errors.log(
            "oversize",
            f"not caching {key!r}: its value is {size:,} bytes, over max_value_bytes={self.max_value_bytes:,} "
            "(the caller still gets it; raise the limit or cache something smaller)",
        )

    def _validated(self, key: str, raw: bytes, scope: Counters | None) -> Any:
        return self._reader.validated(self.keyspace.entry(key), raw, scope)

    def _shared(self, key: str, payload: bytes, scope: Counters | None) -> Any:
        return self._reader.shared(self.keyspace.entry(key), payload, scope)

    def _peek(self, keys: list[str], reply: list[Any], tokens: tuple[str, ...]) -> Any:
        return self._reader.peek(keys[0], reply, tokens)

    def _lease_ms(self, req: flows.Request) -> int:
        times = self._load_times.get(req.where)
        return (times or LoadTimes()).lease_ms(req.protection.lease_ttl)

    def _hold(self, lease: tuple[str, tuple[str, ...], str, int, float] | None) -> Held | None:
        """Keep the lease of a load that starts now alive until it ends, for at most its waiters' budget (``lease``
        as a flow's LOAD step gives it)."""
        if lease is None:
            return None
        key, tag_tokens, token, lease_ms, budget = lease
        return self._keeper.hold(store.extend(self.keyspace, key, tag_tokens, token, lease_ms), lease_ms, budget)

    def _renew_leases(self, calls: list[store.Call]) -> list[bool | BaseException]:
        """Extend leases (their ``extend.lua`` calls) in one round trip; in the keeper's thread."""
        batch = [(call.script, call.keys, call.args) for call in calls]
        try:
            replies = self._guarded(lambda: self.connection.scripts(batch), None)
        except SERVER_ERRORS as exc:
            self._failed("lease heartbeat", exc, None)
            raise
        return [reply if isinstance(reply, BaseException) else bool(reply) for reply in replies]

    def _loaded(self, req: flows.Request, seconds: float, *, leased: bool) -> None:
        stats = self._stats
        stats.add(req.scope, "loads")
        stats.add(req.scope, "load_seconds", seconds)
        if leased:
            stats.add(req.scope, "leases")
        self._load_times.setdefault(req.where, LoadTimes()).observe(seconds)

    def _failed(self, operation: str, exc: BaseException, scope: Counters | None) -> None:
        """A server call failed (the caller fails open): count it, log it (rate-limited), tell the breaker."""
        self.report.failure(operation, exc, scope)

    def _protection(self, base: Protection | None, overrides: dict[str, Any]) -> Protection:
        chosen = base or self.protection
        given = tuple((k, v) for k, v in overrides.items() if v is not None)
        if not given:
            return chosen
        memo_key = (chosen, given)
        found = self._protections.get(memo_key)
        if found is None:  # validated once per distinct override, not on every call
            found = self._protections[memo_key] = dataclasses.replace(chosen, **dict(given))
        return found

    def _counters(self, group: str | None) -> list[str]:
        return [self.keyspace.namespace_version if group is None else self.keyspace.group_version(group)]

    def _tag_counters(self, tags: Iterable[str]) -> list[str]:
        counters = [self.keyspace.tag_version(t) for t in tags]
        if not counters:
            raise ValueError("invalidate_tags() needs at least one tag")
        return counters

    @staticmethod
    def _not_stored(what: str, exc: BaseException) -> InvalidationError:
        return InvalidationError(
            f"{what} did not reach the server ({type(exc).__name__}: {exc}); the cache may serve the old value until "
            "its TTL ends: retry the invalidation"
        )

    # -- sync ----------------------------------------------------------------------------------------------
    def _guarded(self, send: Callable[[], T], scope: Counters | None) -> T:
        """One round trip (``send()``) past the circuit breaker, timed and counted."""
        if not self._breaker.allow():
            raise CircuitOpen("circuit breaker open")
        started = time.perf_counter()
        try:
            result = send()
        finally:
            self._stats.roundtrip(scope, time.perf_counter() - started)
        self._breaker.success()
        return result

    def _call(self, call: store.Call, scope: Counters | None) -> Any:
        return self._guarded(lambda: self.connection.script(call.script, call.keys, call.args), scope)

    def _read(
        self, key: str, scope: Counters | None, tokens: tuple[str, ...] = (), serve_stale: bool = False
    ) -> tuple[Any, list[bytes]]:
        """One read: ``(value or MISSING, header tokens)``; fails open."""
        keys, mget = self._read_plan(key, tokens)
        started = time.perf_counter()
        try:
            if not self._breaker.allow():
                raise CircuitOpen("circuit breaker open")
            reply = self.connection.execute_packed(mget)
            self._breaker.success()
            value, head = self._reader.verdict(
                keys[0], reply, tokens, scope, time.perf_counter() - started, serve_stale
            )
            if value is RECHECK:
                call = store.read(self.keyspace, key)
                started = time.perf_counter()
                raw = self.connection.script(call.script, call.keys, call.args)
                value = self._reader.validated(keys[0], raw, scope, time.perf_counter() - started)
                head = store.header_of(raw) if value is not MISSING else NO_HEAD
        except SERVER_ERRORS as exc:
            self._failed("read", exc, scope)
            self._stats.read(scope, False, time.perf_counter() - started)
            return MISSING, FAILED
        return value, head

    def _store(self, call: store.Call | None, scope: Counters | None) -> bool:
        if call is None:
            return False
        try:
            result = self._call(call, scope)
        except SERVER_ERRORS as exc:
            self._failed("write", exc, scope)
            return False
        self._stats.add(scope, "sets" if result == 1 else "refused_writes")
        return bool(result == 1)

    def _invalidate(self, call: store.Call, what: str) -> Any:
        try:
            return self._call(call, None)
        except SERVER_ERRORS as exc:
            self._failed(what, exc, None)
            raise self._not_stored(what, exc) from exc

    @overload
    def get(self, key: str, *, tags: Iterable[str] = ()) -> Any: ...
    @overload
    def get(self, key: str, default: D, *, tags: Iterable[str] = ()) -> Any | D: ...
    def get(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """The cached value, or ``default`` on a miss (pass ``default=MISSING`` to tell a cached None apart).

        ``tags``: the tags the entry was written with, when you know them; the read is then one ``MGET``.  Without
        them a tagged entry costs a second round trip (a Lua read that looks its tags up itself).
        """
        value = self._read(key, None, _tokens(tags))[0]
        return default if value is MISSING else value

    def set(
        self,
        key: str,
        value: Any,
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        version: int | None = None,
    ) -> bool:
        """Store ``value`` for ``ttl`` (write-through: call it after the database write).  Any load of ``key`` in
        flight is voided, so it cannot overwrite this value with what it read before.  With ``version`` (e.g. the
        row's version column), an entry already holding that version or a newer one is kept: concurrent writers
        can never leave an older value.  False when not stored (older version, or the server could not take it).
        """
        call = self._write_call(
            key,
            value,
            ttl,
            _tokens(tags),
            jitter,
            f"cache.set({key!r})",
            grace=self.protection.stale_ttl,
            version=version,
        )
        return self._store(call, None)

    def delete(self, key: str) -> bool:
        """Remove ``key`` (delete-on-write) and void any load of it in flight; True when it existed.
        :class:`InvalidationError` when the server is unreachable."""
        removed = self._invalidate(store.delete(self.keyspace, key), f"delete({key!r})")
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
        single_flight: bool | None = None,
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = None,
    ) -> T:
        """Cache-aside: the cached value on a hit; on a miss, ``loader()``'s value, stored and returned.

        Concurrent misses of ``key`` (threads, processes, machines) run ``loader`` once; the others wait for its
        value.  ``single_flight``, ``early_refresh`` (XFetch β, 0 = off), ``stale_ttl`` (seconds to serve a stale
        value while one caller reloads), ``lease_ttl`` (seconds before another caller takes over from a loader that
        died: a running loader keeps its lease) and ``max_wait`` (seconds a caller waits for another's load before
        loading itself; default 3 × the lease TTL) override the cache's :class:`Protection` for this call.
        """
        protection = self._protection(None, {"single_flight": single_flight, "early_refresh": early_refresh,
                                             "stale_ttl": stale_ttl, "lease_ttl": lease_ttl,
                                             "max_wait": max_wait})  # fmt: skip
        return self._get_or_load(key, loader, ttl, _tokens(tags), jitter, None, None, protection)

    def _get_or_load(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: TTLLike | None,
        tokens: tuple[str, ...],
        jitter: float | None,
        scope: Counters | None,
        where: str | None,
        protection: Protection,
    ) -> T:
        value, head = self._read(key, scope, tokens, serve_stale=True)
        refresh = None
        if value is not MISSING:
            refresh = self._reader.refresh_due(head, protection) if head else None
            if refresh is None:
                return value  # type: ignore[no-any-return]
            if refresh == "corrupt":
                self._reader.invalid(scope, "corrupt entry times")
                value, refresh = MISSING, None
        where = where or "cache.get_or_set"
        req = flows.Request(key, tokens, ttl, jitter, scope, where, protection)
        flow = flows.after_read(self, req, value, head, refresh, server_down=head is FAILED)
        return drivers.run(self, flow, loader, where)  # type: ignore[no-any-return]

    def bump_version(self, group: str | None = None) -> int:
        """Make every key of ``group`` (its first ``:`` segment, e.g. ``"product"``) a miss at once; with no group,
        every key of the namespace.  One ``INCR``, no SCAN.  Returns 0 when nothing was cached under it."""
        return int(self._invalidate(store.bump(self._counters(group)), "bump_version"))

    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry written with any of ``tags`` a miss at once; returns how many of the tags were in use."""
        return int(self._invalidate(store.bump(self._tag_counters(tags)), "invalidate_tags"))

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires on the server; None when it is not there (or the server is not)."""
        try:
            left = self.connection.execute_packed(resp.command("PTTL", self.keyspace.entry(key)))
        except SERVER_ERRORS as exc:
            self._failed("ttl", exc, None)
            return None
        return left / 1000 if left >= 0 else None

    def clear(self) -> int:
        """Delete every key of this namespace (SCAN + UNLINK in batches); returns how many were deleted.

        O(number of keys), unlike :meth:`bump_version`, which makes them all misses with one command: use this to free
        the memory (tests, a demo, a namespace being retired), not to invalidate.
        """
        deleted = 0
        try:
            for batch in self._scan_batches(self._scan()):
                deleted += int(self.connection.execute_packed(resp.command("UNLINK", *batch)))
        except SERVER_ERRORS as exc:
            self._failed("clear", exc, None)
            raise InvalidationError(f"clear() did not finish ({type(exc).__name__}: {exc}): retry") from exc
        return deleted

    def _scan(self) -> Iterator[bytes]:
        """Every key matching the namespace's pattern (``SCAN``, 1000 at a time; a key may come twice)."""
        cursor: bytes | int = 0
        while True:
            reply = self.connection.execute_packed(
                resp.command("SCAN", cursor, "MATCH", self.keyspace.pattern, "COUNT", 1000)
            )
            cursor, keys = reply
            yield from keys
            if int(cursor) == 0:
                return

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
        if not self._breaker.allow():
            raise CircuitOpen("circuit breaker open")
        started = time.perf_counter()
        try:
            result = await self.connection.ascript(call.script, call.keys, call.args)
        finally:
            self._stats.roundtrip(scope, time.perf_counter() - started)
        self._breaker.success()
        return result

    async def _aread(
        self, key: str, scope: Counters | None, tokens: tuple[str, ...] = (), serve_stale: bool = False
    ) -> tuple[Any, list[bytes]]:
        keys, mget = self._read_plan(key, tokens)
        started = time.perf_counter()
        try:
            if not self._breaker.allow():
                raise CircuitOpen("circuit breaker open")
            reply = await self.connection.aexecute_packed(mget)
            self._breaker.success()
            value, head = self._reader.verdict(
                keys[0], reply, tokens, scope, time.perf_counter() - started, serve_stale
            )
            if value is RECHECK:
                call = store.read(self.keyspace, key)
                started = time.perf_counter()
                raw = await self.connection.ascript(call.script, call.keys, call.args)
                value = self._reader.validated(keys[0], raw, scope, time.perf_counter() - started)
                head = store.header_of(raw) if value is not MISSING else NO_HEAD
        except SERVER_ERRORS as exc:
            self._failed("read", exc, scope)
            self._stats.read(scope, False, time.perf_counter() - started)
            return MISSING, FAILED
        return value, head

    async def _astore(self, call: store.Call | None, scope: Counters | None) -> bool:
        if call is None:
            return False
        try:
            result = await self._acall(call, scope)
        except SERVER_ERRORS as exc:
            self._failed("write", exc, scope)
            return False
        self._stats.add(scope, "sets" if result == 1 else "refused_writes")
        return bool(result == 1)

    async def _ainvalidate(self, call: store.Call, what: str) -> Any:
        try:
            return await self._acall(call, None)
        except SERVER_ERRORS as exc:
            self._failed(what, exc, None)
            raise self._not_stored(what, exc) from exc

    async def aget(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """Async :meth:`get`."""
        value = (await self._aread(key, None, _tokens(tags)))[0]
        return default if value is MISSING else value

    async def aset(
        self,
        key: str,
        value: Any,
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        version: int | None = None,
    ) -> bool:
        """Async :meth:`set`."""
        call = self._write_call(
            key,
            value,
            ttl,
            _tokens(tags),
            jitter,
            f"cache.aset({key!r})",
            grace=self.protection.stale_ttl,
            version=version,
        )
        return await self._astore(call, None)

    async def adelete(self, key: str) -> bool:
        """Async :meth:`delete`."""
        removed = await self._ainvalidate(store.delete(self.keyspace, key), f"adelete({key!r})")
        self._stats.add(None, "deletes")
        return bool(removed)

    @overload
    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        single_flight: bool | None = None,
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = None,
    ) -> T: ...
    @overload
    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        single_flight: bool | None = None,
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = None,
    ) -> T: ...
    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]] | Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        single_flight: bool | None = None,
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = None,
    ) -> T:
        """Async :meth:`get_or_set`; ``loader`` may be a plain or an async callable.  A stale or early refresh runs
        in the background: the caller gets the current value at once."""
        protection = self._protection(None, {"single_flight": single_flight, "early_refresh": early_refresh,
                                             "stale_ttl": stale_ttl, "lease_ttl": lease_ttl,
                                             "max_wait": max_wait})  # fmt: skip
        return await self._aget_or_load(key, loader, ttl, _tokens(tags), jitter, None, None, protection)

    async def _aget_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]] | Callable[[], T],
        ttl: TTLLike | None,
        tokens: tuple[str, ...],
        jitter: float | None,
        scope: Counters | None,
        where: str | None,
        protection: Protection,
    ) -> T:
        value, head = await self._aread(key, scope, tokens, serve_stale=True)
        refresh = None
        if value is not MISSING:
            refresh = self._reader.refresh_due(head, protection) if head else None
            if refresh is None:
                return value  # type: ignore[no-any-return]
            if refresh == "corrupt":
                self._reader.invalid(scope, "corrupt entry times")
                value, refresh = MISSING, None
        req = flows.Request(key, tokens, ttl, jitter, scope, where or "cache.aget_or_set", protection, background=True)
        flow = flows.after_read(self, req, value, head, refresh, server_down=head is FAILED)
        return await drivers.arun(self, flow, loader)  # type: ignore[no-any-return]

    async def abump_version(self, group: str | None = None) -> int:
        """Async :meth:`bump_version`."""
        return int(await self._ainvalidate(store.bump(self._counters(group)), "bump_version"))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Async :meth:`invalidate_tags`."""
        return int(await self._ainvalidate(store.bump(self._tag_counters(tags)), "invalidate_tags"))

    async def attl(self, key: str) -> float | None:
        """Async :meth:`ttl`."""
        try:
            left = await self.connection.aexecute_packed(resp.command("PTTL", self.keyspace.entry(key)))
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
        single_flight: bool | None = None,
        early_refresh: float | None = None,
        stale_ttl: float | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = None,
        protection: Protection | None = None,
    ) -> CachedDecorator:
        """Decorate a ``def`` or ``async def`` (function or method) with cache-aside.

        ``key``: a template filled from the bound arguments (``"product:{product_id}"``); by default the function's
        qualified name plus a digest of its arguments.  ``tags``: names (or templates) that :meth:`invalidate_tags`
        can later invalidate.  ``single_flight``/``early_refresh``/``stale_ttl``/``protection``: as for
        :meth:`get_or_set`.
        """
        from .decorator import CachedDecorator

        overrides = {
            "single_flight": single_flight,
            "early_refresh": early_refresh,
            "stale_ttl": stale_ttl,
            "lease_ttl": lease_ttl,
            "max_wait": max_wait,
        }
        chosen = self._protection(protection, overrides)
        return CachedDecorator(self, ttl=ttl, key=key, tags=tuple(tags), jitter=jitter, protection=chosen)

    def stats(self) -> CacheStats:
        """Hits, misses, errors, loads, leases, waits and timings for the namespace and each cached function, and
        the state of the server's circuit breaker."""
        snapshot = self._stats.snapshot()
        return dataclasses.replace(snapshot, breaker=self._breaker.state, breaker_opens=self._breaker.opens)

    def reset_stats(self) -> None:
        self._stats.reset()

    def _scope(self, name: str) -> Counters | None:
        return self._stats.scope(name)

    @property
    def signer(self) -> Signer | None:
        """The HMAC signer of this cache's values (``signing_key=``), or None: for components that store their own
        values and must sign them the same way."""
        return self._signer

    @property
    def url(self) -> str:
        """The server URL, with any password hidden."""
        return redact(self.connection.address.url)

    @property
    def closed(self) -> bool:
        return self.connection.closed

    def close(self) -> None:
        """Close the connections; stops the embedded server when no other cache in the process uses it."""
        self._keeper.close()
        self.connection.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (also closes this event loop's asyncio connections; waits for background refreshes)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._keeper.close()
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
