"""The :class:`Cache`: cache-aside on a Redis-compatible server, with sync and async twins.

A facade.  Its settings are checked by :class:`~cachewise.settings.CacheSettings`; what it does is done by the
read-through :class:`~cachewise.engine.Engine` (reads, cache-aside, and the flows of :mod:`cachewise.engine.ops`),
whose every command goes through the one guarded :class:`~cachewise.executor.Executor`.  Each public method here
builds a call and hands it to the engine, with the sync or the asyncio client.  Reads and writes fail open (a
server error is a miss or a skipped write, counted and logged); invalidations that fail raise
:class:`~cachewise.errors.InvalidationError`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

from .decorator import CachedDecorator
from .engine import Context, Engine, EntryReader, EntryWriter, Site, ops
from .engine.locals import LocalReads
from .engine.stampede import DEFAULT, Protection, ProtectionOverrides
from .errors import ConfigurationError
from .executor import Executor
from .failures import ErrorLog
from .keyspace import KeySpace, tag_token
from .local import LocalCache, Tracker
from .missing import MISSING
from .report import Reporter
from .serializers import Serializer
from .settings import CacheSettings
from .signing import Signer
from .stats import CacheStats, StatsRegistry
from .transport.connect import AnyConnection, connect
from .transport.urls import redact
from .ttl import TTLLike

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover
    from typing_extensions import Unpack

__all__ = ["MISSING", "Cache"]

T = TypeVar("T")
D = TypeVar("D")


def tokens(tags: Iterable[str]) -> tuple[str, ...]:
    """Tag tokens for a read or a write, once each (the empty tuple, the common case, costs nothing)."""
    return tuple(dict.fromkeys(tag_token(t) for t in tags)) if tags else ()


def _local_options(local: bool | LocalCache | None) -> LocalCache | None:
    """What ``local=`` asks for (None: no local tier)."""
    if local is None or local is False:
        return None
    if local is True:
        return LocalCache()
    if not isinstance(local, LocalCache):
        raise ConfigurationError(f"local={local!r}: use True, False or a cachewise.LocalCache(...)")
    return local


def _local_tier(
    local: LocalCache | None, connection: AnyConnection, space: KeySpace, stats: StatsRegistry, reader: EntryReader
) -> LocalReads | None:
    """The local tier of ``local`` (None: off), its tracker not started yet."""
    if local is None:
        return None
    tier = local.tier()
    protocol = local.protocol
    tracker = Tracker(tier, lambda: connection.tracking_links(protocol), space.tracked_prefixes(), protocol=protocol)
    return LocalReads(tier, tracker, stats, reader)


class Cache:
    """A cache in one namespace of one server.

    ``url``: ``embedded://`` (default, a private Valkey started for you), ``embedded:///dir``, ``redis://``,
    ``rediss://`` or ``unix://``; when None, ``CACHEWISE_URL`` decides.  ``namespace`` prefixes every key
    (``namespace:key``) and bounds every invalidation.  ``default_ttl`` is used by writes that give no TTL; without it
    every write must give one.  ``jitter`` (0 ≤ j < 1) spreads TTLs by ±j.  ``serializer``: ``"json"`` (default) or
    ``"msgpack"``.  ``protection``: how cache-aside reads protect the origin (single flight, early refresh, stale
    serving; see :class:`~cachewise.Protection`).  ``timeout``/``connect_timeout`` (seconds) bound each server call,
    and ``breaker_threshold`` failures in a row open the circuit breaker for ``breaker_reset`` seconds (calls skip the
    server meanwhile).  ``max_value_bytes``: larger values are not cached (the caller still gets them).
    ``signing_key``: HMAC-sign every value and never decode one that does not verify (required for
    ``serializer="pickle"``).  Passwords in URLs never appear in logs, reprs or errors.  ``pool_timeout`` bounds the
    wait for a free connection in a burst of more than ``max_connections`` callers.
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
        local: bool | LocalCache | None = None,
    ) -> None:
        settings = CacheSettings(
            url, namespace, default_ttl, jitter, serializer, protection, timeout, connect_timeout, pool_timeout,
            max_connections, breaker_threshold, breaker_reset, max_value_bytes, signing_key, client_options,
        )  # fmt: skip
        self.settings = settings
        self.namespace = namespace
        self.serializer = settings.make_serializer()
        self._signer = settings.make_signer()
        self.max_value_bytes = max_value_bytes
        self.jitter = jitter
        self.default_ttl = default_ttl
        self.protection = protection
        local_options = _local_options(local)
        stats, errors = StatsRegistry(namespace), ErrorLog()
        self._stats = stats
        self.connection = connect(url, settings.client())
        #: Where every key lives; on a Cluster, fills are announced on sharded pub/sub.
        self.keyspace = KeySpace(namespace, sharded_fills=self.connection.sharded_pubsub)
        #: What components built on this cache (rate limiter, sessions, feature store, yours) report through.
        self.report = Reporter(stats, errors, self.connection.breaker)
        #: The one guarded path to the server: components built on this cache send their commands through it.
        self.executor = Executor(self.connection, self.report)
        reader = EntryReader(namespace, self.serializer, stats, errors, self._signer)
        writer = EntryWriter(
            self.keyspace, self.serializer, stats, errors, default_ttl=default_ttl, jitter=jitter,
            max_value_bytes=max_value_bytes, signer=self._signer,
        )  # fmt: skip
        context = Context(self.keyspace, reader, writer, stats, self.report, protection)
        self._local = _local_tier(local_options, self.connection, self.keyspace, stats, reader)
        if self._local is not None:
            context.local = self._local.tier
            self._local.tracker.start()
        #: The read-through engine (reads, cache-aside, leases, waits) this facade and ``@cached`` run on.
        self.engine = Engine(context, self.executor, self._local)

    # -- sync ----------------------------------------------------------------------------------------------
    @overload
    def get(self, key: str, *, tags: Iterable[str] = ()) -> Any: ...
    @overload
    def get(self, key: str, default: D, *, tags: Iterable[str] = ()) -> Any | D: ...
    def get(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """The cached value, or ``default`` on a miss (pass ``default=MISSING`` to tell a cached None apart).

        ``tags``: the tags the entry was written with, when you know them; the read is then one ``MGET``.  Without
        them a tagged entry costs a second round trip (a read that includes its tags' counters).
        """
        value = self.engine.read(key, tokens(tags))[0]
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
        return bool(self.engine.run(self._write(key, value, ttl, tags, jitter, version, f"cache.set({key!r})")))

    def delete(self, key: str) -> bool:
        """Remove ``key`` (delete-on-write) and void any load of it in flight; True when it existed.
        :class:`InvalidationError` when the server is unreachable."""
        return bool(self.engine.run(ops.delete(self.engine.context, key, f"delete({key!r})")))

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        **protection: Unpack[ProtectionOverrides],
    ) -> T:
        """Cache-aside: the cached value on a hit; on a miss, ``loader()``'s value, stored and returned.

        Concurrent misses of ``key`` (threads, processes, machines) run ``loader`` once; the others wait for its
        value.  ``single_flight``, ``early_refresh`` (XFetch β, 0 = off), ``stale_ttl`` (seconds to serve a stale
        value while one caller reloads), ``lease_ttl`` (seconds before another caller takes over from a loader that
        died: a running loader keeps its lease) and ``max_wait`` (seconds a caller waits for another's load before
        loading itself; default 3 × the lease TTL) override the cache's :class:`Protection` for this call.
        """
        site = self._site(ttl, jitter, protection, "cache.get_or_set")
        return self.engine.get_or_load(site, key, tokens(tags), loader)  # type: ignore[no-any-return]

    def bump_version(self, group: str | None = None) -> int:
        """Make every key of ``group`` (its first ``:`` segment, e.g. ``"product"``) a miss at once; with no group,
        every key of the namespace.  One ``INCR``, no SCAN.  Returns 0 when nothing was cached under it."""
        return int(self.engine.run(ops.bump(self.engine.context, self._version_counter(group), "bump_version")))

    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry written with any of ``tags`` a miss at once; returns how many of the tags were in use."""
        return int(self.engine.run(ops.bump(self.engine.context, self._tag_counters(tags), "invalidate_tags")))

    def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires on the server; None when it is not there (or the server is not)."""
        left: float | None = self.engine.run(ops.ttl(self.engine.context, key))
        return left

    def clear(self) -> int:
        """Delete every key of this namespace (SCAN + UNLINK in batches); returns how many were deleted.

        O(number of keys), unlike :meth:`bump_version`, which makes them all misses with one command: use this to free
        the memory (tests, a demo, a namespace being retired), not to invalidate.
        """
        return int(self.engine.run(ops.clear(self.engine.context)))

    # -- async ---------------------------------------------------------------------------------------------
    async def aget(self, key: str, default: Any = None, *, tags: Iterable[str] = ()) -> Any:
        """Async :meth:`get`."""
        value = (await self.engine.aread(key, tokens(tags)))[0]
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
        return bool(await self.engine.arun(self._write(key, value, ttl, tags, jitter, version, f"cache.aset({key!r})")))

    async def adelete(self, key: str) -> bool:
        """Async :meth:`delete`."""
        return bool(await self.engine.arun(ops.delete(self.engine.context, key, f"adelete({key!r})")))

    @overload
    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        **protection: Unpack[ProtectionOverrides],
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
        **protection: Unpack[ProtectionOverrides],
    ) -> T: ...
    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]] | Callable[[], T],
        ttl: TTLLike | None = None,
        *,
        tags: Iterable[str] = (),
        jitter: float | None = None,
        **protection: Unpack[ProtectionOverrides],
    ) -> T:
        """Async :meth:`get_or_set`; ``loader`` may be a plain or an async callable.  A stale or early refresh runs
        in the background: the caller gets the current value at once."""
        site = self._site(ttl, jitter, protection, "cache.aget_or_set", background=True)
        return await self.engine.aget_or_load(site, key, tokens(tags), loader)  # type: ignore[no-any-return]

    async def abump_version(self, group: str | None = None) -> int:
        """Async :meth:`bump_version`."""
        return int(await self.engine.arun(ops.bump(self.engine.context, self._version_counter(group), "bump_version")))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Async :meth:`invalidate_tags`."""
        return int(await self.engine.arun(ops.bump(self.engine.context, self._tag_counters(tags), "invalidate_tags")))

    async def attl(self, key: str) -> float | None:
        """Async :meth:`ttl`."""
        left: float | None = await self.engine.arun(ops.ttl(self.engine.context, key))
        return left

    # -- the calls both twins make (no I/O) ---------------------------------------------------------------------
    def _write(
        self, key: str, value: Any, ttl: TTLLike | None, tags: Iterable[str], jitter: float | None,
        version: int | None, where: str,
    ) -> Any:  # fmt: skip
        return ops.write(self.engine.context, key, value, ttl, tokens(tags), jitter, where, version=version)

    def _site(
        self,
        ttl: TTLLike | None,
        jitter: float | None,
        overrides: ProtectionOverrides,
        where: str,
        *,
        background: bool = False,
    ) -> Site:
        protection = self.engine.context.protection_with(None, dict(overrides))
        return Site(ttl, jitter, None, where, protection, background)

    def _version_counter(self, group: str | None) -> list[str]:
        return [self.keyspace.namespace_version if group is None else self.keyspace.group_version(group)]

    def _tag_counters(self, tags: Iterable[str]) -> list[str]:
        counters = [self.keyspace.tag_version(t) for t in tags]
        if not counters:
            raise ValueError("invalidate_tags() needs at least one tag")
        return counters

    # -- decorator, stats, life cycle ------------------------------------------------------------------------
    def cached(
        self,
        ttl: TTLLike | None = None,
        key: str | None = None,
        tags: Iterable[str] = (),
        *,
        jitter: float | None = None,
        protection: Protection | None = None,
        local: bool = True,
        **overrides: Unpack[ProtectionOverrides],
    ) -> CachedDecorator:
        """Decorate a ``def`` or ``async def`` (function or method) with cache-aside.

        ``key``: a template filled from the bound arguments (``"product:{product_id}"``); by default the function's
        qualified name plus a digest of its arguments.  ``tags``: names (or templates) that :meth:`invalidate_tags`
        can later invalidate.  ``single_flight``/``early_refresh``/``stale_ttl``/``lease_ttl``/``max_wait``/
        ``protection``: as for :meth:`get_or_set`.  ``local=False``: never answer this function from the cache's local
        tier (``Cache(local=...)``).
        """
        chosen = self.engine.context.protection_with(protection, dict(overrides))
        return CachedDecorator(self, ttl=ttl, key=key, tags=tuple(tags), jitter=jitter, protection=chosen, local=local)

    def stats(self) -> CacheStats:
        """Hits, misses, errors, loads, leases, waits and timings for the namespace and each cached function, and
        the state of the server's circuit breaker."""
        snapshot = self._stats.snapshot()
        breaker = self.executor.breaker
        local = None if self._local is None else self._local.tier.stats()
        return CacheStats(
            snapshot.namespace, snapshot.total, snapshot.functions, breaker.state, breaker.opens, local, snapshot.limits
        )

    def reset_stats(self) -> None:
        self._stats.reset()

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
        self.engine.close()
        self.connection.close()

    async def aclose(self) -> None:
        """Async :meth:`close` (also closes this event loop's asyncio connections; waits for background refreshes)."""
        await self.engine.aclose()
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
