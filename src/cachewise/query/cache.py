"""QueryCache: dashboard query results in a :class:`~cachewise.Cache`, keyed by the normalised SQL, its parameters,
the database and whoever the result depends on.

* Keys: :func:`~cachewise.query.normalize.query_key` (comments/whitespace do not matter; parameters with their
  types, the database URL without its password, and ``context=`` do).  A query whose rows depend on who asks
  (row-level security, a tenant filter, a per-user macro) must pass ``context=``: without it, users would share
  entries (Superset #7580, #10804).
* Misses run the query once however many callers ask (the cache's single flight: threads, tasks, processes).
* ``ttl=`` per query; ``refresh_every=`` makes entries expire at the next boundary of the data's refresh schedule.
* ``tags=("sales",)`` tags an entry with ``table:sales``; :meth:`QueryCache.invalidate_tags` makes every query over
  that table a miss in one call (an ETL job's last step).
* A result whose stored form is over the limit (``max_bytes``, and the cache's own ``max_value_bytes``) is returned
  whole, never truncated, and not cached: it is counted (``stats()["oversize"]``) and logged as a warning.  A small
  marker is cached instead for the entry's TTL, so that callers skip straight to the database rather than queue
  behind one another.

Rows are ``dict`` s of column name to value as the driver returns them, stored by the cache's serializer: with the
default JSON serializer ``Decimal``, ``datetime``, ``date``, ``time`` and ``bytes`` come back with their types
(``Decimal`` stays exact; an aware ``datetime`` keeps its UTC offset), ``UUID`` comes back as ``str``.  Every caller,
the one that ran the query included, gets the stored form, so all callers get identical values.  DataFrames are
stored as Arrow IPC (see :mod:`cachewise.query.frames`): pandas with :meth:`QueryCache.dataframe`, polars with
:meth:`QueryCache.polars` (each its own entry, so each keeps its library's dtypes).

Every statement is sent with bound parameters (``sqlalchemy.text(sql)`` + a parameter dict); parameters are never
formatted into the SQL text.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigurationError
from ..ttl import AlignedTTL, TTLLike, resolve_ttl_ms, to_seconds
from . import frames
from .normalize import database_identity, query_key

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import polars as pl
    from sqlalchemy.engine import Engine

    from ..cache import Cache

__all__ = ["QueryCache"]

log = logging.getLogger("cachewise.query")

_OVERSIZE = "query-oversize"
Row = dict[str, Any]
#: What a read returns: rows (dicts), or a DataFrame of one library.
Form = Literal["rows", "pandas", "polars"]
#: The key suffix of each form: the rows and a pandas and a polars frame of one query are three entries (each frame
#: keeps its own library's dtypes).
_SUFFIX: dict[Form, str] = {"rows": "", "pandas": ":df", "polars": ":pl"}
_REFETCH = object()


def _distinct(columns: list[str], what: str) -> None:
    """Refuse repeated column names (one of the values would be lost, or the frame could not be stored)."""
    if len(set(columns)) != len(columns):
        raise ConfigurationError(
            f"{what} needs distinct column names; this query returns {columns}: give the repeated ones an alias "
            "(SELECT a.id AS a_id, b.id AS b_id ...)"
        )


class QueryCache:
    """Cached SQL query results over a SQLAlchemy (sync) ``engine``.

    ``ttl``: the default TTL of an entry (seconds, ``timedelta`` or ``until_next(...)``).  ``refresh_every``
    (seconds or a ``timedelta``): entries expire at the next multiple of it (UTC, from the epoch) instead, aligned
    with the data's refresh schedule; a per-call ``ttl=`` still wins.  ``max_bytes``: results whose stored form is
    larger are not cached (the cache's ``max_value_bytes`` applies too; the smaller limit wins).  ``lease_ttl``
    (seconds; None: the cache's, derived from the query times observed): the lease of the caller running a cold
    query is kept alive while the query runs, and this is how long a caller that died holds up the others.
    ``max_wait`` (seconds, default 600): how long the other viewers wait for that one running query before they
    run it themselves; long by default, since running a slow query once more per viewer is what this cache is
    here to prevent (set the database's statement timeout for queries that hang).
    """

    def __init__(
        self,
        cache: Cache,
        engine: Engine,
        ttl: TTLLike | None = 300,
        *,
        refresh_every: timedelta | float | None = None,
        max_bytes: int | None = None,
        lease_ttl: float | None = None,
        max_wait: float | None = 600.0,
    ) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or max_bytes < 1):
            raise ConfigurationError("max_bytes must be None (the cache's limit) or a positive number of bytes")
        self.cache = cache
        self.engine = engine
        self.ttl: TTLLike | None = AlignedTTL(every=to_seconds(refresh_every)) if refresh_every is not None else ttl
        if self.ttl is not None:
            resolve_ttl_ms(self.ttl, None, where="QueryCache(ttl=...)")  # validate now, not at the first miss
        self.max_bytes = max_bytes
        if lease_ttl is not None and not (lease_ttl > 0):
            raise ConfigurationError("lease_ttl must be None or a positive number of seconds")
        self.lease_ttl = lease_ttl
        if max_wait is not None and not (0 < max_wait <= 3600):
            raise ConfigurationError("max_wait must be None (the cache's) or seconds in (0, 3600]")
        self.max_wait = max_wait
        self.database = database_identity(engine.url)
        self._lock = threading.Lock()
        self._counts = {"executions": 0, "oversize": 0}

    # -- pure ------------------------------------------------------------------------------------------------------
    def key_for(self, sql: str, params: Mapping[str, Any] | None = None, *, context: Any = None) -> str:
        """The cache key of ``sql`` with ``params`` for ``context`` on this database (no I/O)."""
        return query_key(sql, params, self.database, context)

    @staticmethod
    def table_tags(tables: Iterable[str]) -> tuple[str, ...]:
        """The cache tags of table names: ``("sales",)`` → ``("table:sales",)``."""
        if isinstance(tables, str):
            raise ConfigurationError("tags= takes a tuple of table names, e.g. tags=('sales',), not one string")
        return tuple(f"table:{t}" for t in tables)

    @property
    def limit(self) -> int | None:
        """The largest stored result, in bytes (None: no limit)."""
        limits = [x for x in (self.max_bytes, self.cache.max_value_bytes) if x is not None]
        return min(limits) if limits else None

    def stats(self) -> dict[str, int]:
        """``executions`` (queries this object sent to the database) and ``oversize`` (results not cached)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- database --------------------------------------------------------------------------------------------------
    def _fetch_rows(self, sql: str, params: Mapping[str, Any] | None) -> list[Row]:
        from sqlalchemy import text

        self._count("executions")
        with self.engine.connect() as conn:
            result = conn.execute(text(sql), dict(params or {}))
            _distinct(list(result.keys()), "a row is a dict, which")
            return [dict(row._mapping) for row in result]

    def _fetch_frame(self, kind: frames.Kind, sql: str, params: Mapping[str, Any] | None) -> Any:
        from sqlalchemy import text

        self._count("executions")
        with self.engine.connect() as conn:
            result = conn.execute(text(sql), dict(params or {}))
            columns = list(result.keys())
            records = [tuple(row) for row in result]
        _distinct(columns, "a DataFrame is stored as Arrow, which")
        if kind == "polars":
            import polars as pl

            return pl.DataFrame(records, schema=columns, orient="row", infer_schema_length=None)
        import pandas as pd

        return pd.DataFrame.from_records(records, columns=columns)

    # -- storing ---------------------------------------------------------------------------------------------------
    def _loader(self, key: str, fetch: Callable[[], Any], box: dict[str, Any]) -> Callable[[], Any]:
        """The cache loader of one call: runs ``fetch``, keeps the stored form in ``box`` (what every caller gets),
        and returns what to cache: the value, or a small marker when it is too large."""

        def load() -> Any:
            value = fetch()
            payload = self.cache.serializer.dumps(value)
            box["value"] = self.cache.serializer.loads(payload)
            limit = self.limit
            if limit is not None and len(payload) > limit:
                self._count("oversize")
                log.warning(
                    "not caching query %s: its result is %s bytes, over the limit of %s bytes "
                    "(returned whole; raise max_bytes or narrow the query)",
                    key,
                    f"{len(payload):,}",
                    f"{limit:,}",
                )
                return {"format": _OVERSIZE, "bytes": len(payload)}
            return box["value"]  # the stored form, also for callers of this process that join this load

        return load

    @staticmethod
    def _oversize_marker(value: Any) -> bool:
        return isinstance(value, dict) and value.get("format") == _OVERSIZE

    def _fetch(self, form: Form, sql: str, params: Mapping[str, Any] | None) -> Any:
        """What the cache stores for ``form``: the rows, or the frame as a cache value."""
        if form == "rows":
            return self._fetch_rows(sql, params)
        return frames.to_cache_value(self._fetch_frame(form, sql, params))

    def _stored(self, form: Form, sql: str, params: Mapping[str, Any] | None) -> Any:
        """A fresh run of the query in the form every caller gets (for a result too large to cache)."""
        value = self._fetch(form, sql, params)
        return value if form != "rows" else self.cache.serializer.loads(self.cache.serializer.dumps(value))

    @staticmethod
    def _finish(form: Form, value: Any) -> Any:
        return value if form == "rows" else frames.from_cache_value(value)

    def _get_or_load(self, key: str, load: Callable[[], Any], ttl: TTLLike | None, tags: Iterable[str]) -> Any:
        chosen = ttl if ttl is not None else self.ttl
        return self.cache.get_or_set(
            key, load, chosen, tags=self.table_tags(tags), lease_ttl=self.lease_ttl, max_wait=self.max_wait
        )

    async def _aget_or_load(
        self, key: str, load: Callable[[], Awaitable[Any]], ttl: TTLLike | None, tags: Iterable[str]
    ) -> Any:
        chosen = ttl if ttl is not None else self.ttl
        return await self.cache.aget_or_set(
            key, load, chosen, tags=self.table_tags(tags), lease_ttl=self.lease_ttl, max_wait=self.max_wait
        )

    def _pick(self, value: Any, box: dict[str, Any]) -> Any:
        """The result of a read: this caller's own load when it ran one, else the cached value; ``_REFETCH`` for a
        result too large to cache (stored as a marker: run the query again)."""
        if "value" in box:
            return box["value"]
        return _REFETCH if self._oversize_marker(value) else value

    def _plan(
        self, form: Form, sql: str, params: Mapping[str, Any] | None, context: Any
    ) -> tuple[str, Callable[[], Any], dict[str, Any]]:
        """A read's entry key, its loader, and the box where the loader leaves this caller's own result."""
        key = self.key_for(sql, params, context=context) + _SUFFIX[form]
        box: dict[str, Any] = {}
        return key, self._loader(key, lambda: self._fetch(form, sql, params), box), box

    def _read(
        self,
        form: Form,
        sql: str,
        params: Mapping[str, Any] | None,
        ttl: TTLLike | None,
        tags: Iterable[str],
        context: Any,
    ) -> Any:
        key, load, box = self._plan(form, sql, params, context)
        value = self._pick(self._get_or_load(key, load, ttl, tags), box)
        if value is _REFETCH:
            value = self._stored(form, sql, params)
        return self._finish(form, value)

    async def _aread(
        self,
        form: Form,
        sql: str,
        params: Mapping[str, Any] | None,
        ttl: TTLLike | None,
        tags: Iterable[str],
        context: Any,
    ) -> Any:
        """:meth:`_read` for asyncio: the query, and decoding a frame, run in a worker thread."""
        key, load, box = self._plan(form, sql, params, context)

        async def aload() -> Any:
            return await asyncio.to_thread(load)

        value = self._pick(await self._aget_or_load(key, aload, ttl, tags), box)
        if value is _REFETCH:
            value = await asyncio.to_thread(self._stored, form, sql, params)
        return value if form == "rows" else await asyncio.to_thread(self._finish, form, value)

    # -- reads -----------------------------------------------------------------------------------------------------
    def rows(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> list[Row]:
        """The rows of ``sql`` with ``params`` (a list of column → value dicts), from the cache when there."""
        rows: list[Row] = self._read("rows", sql, params, ttl, tags, context)
        return rows

    def dataframe(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> pd.DataFrame:
        """The result of ``sql`` as a pandas DataFrame, stored as Arrow IPC (dtypes kept)."""
        return self._read("pandas", sql, params, ttl, tags, context)

    def polars(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> pl.DataFrame:
        """The result of ``sql`` as a polars DataFrame (needs ``polars``), stored as Arrow IPC (dtypes kept)."""
        frame: pl.DataFrame = self._read("polars", sql, params, ttl, tags, context)
        return frame

    async def arows(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> list[Row]:
        """Async :meth:`rows`: on a miss the query runs in a worker thread."""
        rows: list[Row] = await self._aread("rows", sql, params, ttl, tags, context)
        return rows

    async def adataframe(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> pd.DataFrame:
        """Async :meth:`dataframe`: on a miss the query runs in a worker thread."""
        return await self._aread("pandas", sql, params, ttl, tags, context)

    async def apolars(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        ttl: TTLLike | None = None,
        tags: Iterable[str] = (),
        context: Any = None,
    ) -> pl.DataFrame:
        """Async :meth:`polars`: on a miss the query runs in a worker thread."""
        frame: pl.DataFrame = await self._aread("polars", sql, params, ttl, tags, context)
        return frame

    # -- invalidation ----------------------------------------------------------------------------------------------
    def invalidate(self, sql: str, params: Mapping[str, Any] | None = None, *, context: Any = None) -> bool:
        """Drop the cached rows and DataFrames (pandas and polars) of one query; True when any was cached."""
        key = self.key_for(sql, params, context=context)
        return any([self.cache.delete(key + suffix) for suffix in _SUFFIX.values()])

    def invalidate_tags(self, *tables: str) -> int:
        """Make every cached query tagged with any of ``tables`` a miss (one call); how many tags were in use."""
        return self.cache.invalidate_tags(*self.table_tags(tables))

    async def ainvalidate(self, sql: str, params: Mapping[str, Any] | None = None, *, context: Any = None) -> bool:
        """Async :meth:`invalidate`."""
        key = self.key_for(sql, params, context=context)
        return any([await self.cache.adelete(key + suffix) for suffix in _SUFFIX.values()])

    async def ainvalidate_tags(self, *tables: str) -> int:
        """Async :meth:`invalidate_tags`."""
        return await self.cache.ainvalidate_tags(*self.table_tags(tables))

    def __repr__(self) -> str:
        return (
            f"QueryCache(database={self.database!r}, ttl={self.ttl!r}, max_bytes={self.max_bytes!r}, "
            f"lease_ttl={self.lease_ttl!r}, max_wait={self.max_wait!r})"
        )
