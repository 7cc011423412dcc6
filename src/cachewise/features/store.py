"""A feature store for online inference: one Redis hash per entity, filled in batches from SQL, read in one trip.

Layout (readable with ``HGETALL`` from any client): ``{namespace}:features:{entity}:{id}`` holds one field per
feature plus ``updated_at`` (Unix time in milliseconds, taken on the writing client when the batch is sent).
Each value is JSON (orjson): ints stay ints, floats floats, strings come back as strings (stored quoted), ``None``
as ``null``, ``datetime``/``date`` as ISO strings (they come back as strings), ``Decimal`` (what PostgreSQL's
``avg`` over ``numeric`` returns) as a float, numpy scalars as their Python value.  ``updated_at`` is reserved.

Writes: batches of ``batch_size`` rows, each batch one Lua script that, per entity, deletes the old hash, writes
the new fields and sets the TTL.  A reader therefore never sees half an entity, and a feature dropped from the
query does not survive a refresh.  At most two batches are held at a time (one being written by a writer thread
while the next is read and encoded), so a table of millions of rows streams with bounded memory (SQL goes through a
server-side cursor).

Reads: ``get_many`` sends one pipeline (one round trip) of ``HGETALL`` (or ``HMGET`` for a subset of features);
``max_age`` turns features older than that many seconds into ``None`` so a model can refuse stale features.
Reads fail open (a server error is counted and logged by the cache, and the entity reads as missing);
materialisation raises, because a batch job must know that it did not write.
"""

from __future__ import annotations

import decimal
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson
import redis

from ..failures import SERVER_ERRORS
from ..server.scripts import KeyOrArg, Script
from ..ttl import to_seconds

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..cache import Cache

__all__ = ["UPDATED_AT", "FeatureStore", "MaterializeSummary"]

#: The hash field holding the write time (Unix milliseconds); a feature may not use this name.
UPDATED_AT = "updated_at"

_MATERIALIZE = Script.beside(__package__ or "cachewise.features", "materialize.lua")


@dataclass(frozen=True)
class MaterializeSummary:
    """What one materialisation did."""

    rows: int
    seconds: float
    batches: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        return item()
    raise TypeError(f"feature value of type {type(value).__name__} cannot be stored as JSON")


def encode_value(value: Any) -> bytes:
    """One feature value as the bytes stored in its hash field."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_value(raw: bytes | str) -> Any:
    """A stored field back to its value (a field some other writer left that is not JSON comes back as text)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def _batched(records: Iterator[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    while batch := list(itertools.islice(records, size)):
        yield batch


_loads = orjson.loads


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class FeatureStore:
    """Features of one kind of entity (``"user"``), materialised in batches and read online.

    ``id_column`` (default ``f"{entity}_id"``) names the column holding the entity id; every other column is a
    feature.  ``ttl`` (seconds or a ``timedelta``) is set on every hash at every write.  Materialisation uses its
    own connection whose reply timeout is ``write_timeout`` seconds (a batch is one script call, bigger than the
    online reads the cache's short timeout is meant for).
    """

    def __init__(
        self,
        cache: Cache,
        entity: str,
        ttl: float | timedelta,
        *,
        id_column: str | None = None,
        batch_size: int = 5000,
        write_timeout: float = 30.0,
    ) -> None:
        if not entity or ":" in entity:
            raise ValueError(f"entity must be a non-empty name without ':', got {entity!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seconds = to_seconds(ttl)
        if not seconds > 0:
            raise ValueError(f"the feature TTL must be > 0 seconds, got {ttl!r}")
        self.cache = cache
        self.entity = entity
        self.ttl_ms = max(1, round(seconds * 1000))
        self.id_column = id_column or f"{entity}_id"
        self.batch_size = batch_size
        self.write_timeout = write_timeout
        self.prefix = f"{cache.keyspace.prefix}features:{entity}:"

    def key(self, entity_id: Any) -> str:
        """The server key of one entity's hash."""
        return self.prefix + str(entity_id)

    # -- materialisation ------------------------------------------------------------------------------------
    def materialize(
        self, rows: Iterable[Mapping[str, Any]] | Any, *, progress: Callable[[int], None] | None = None
    ) -> MaterializeSummary:
        """Write ``rows`` (an iterable of mappings, or a pandas DataFrame) in batches; ``progress(rows_done)`` is
        called after each batch.  Raises the server's error if a batch could not be written."""
        return self._run(self._records(rows), progress)

    def materialize_sql(
        self,
        engine: Engine,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> MaterializeSummary:
        """Stream the result of ``sql`` (bound ``params``, never formatted in) through a server-side cursor."""
        from sqlalchemy import text

        with engine.connect() as conn:
            streaming = conn.execution_options(stream_results=True, yield_per=self.batch_size)
            result = streaming.execute(text(sql), dict(params or {}))
            records: Iterator[Mapping[str, Any]] = iter(result.mappings())  # type: ignore[arg-type]
            return self._run(records, progress)

    def _records(self, rows: Iterable[Mapping[str, Any]] | Any) -> Iterator[Mapping[str, Any]]:
        if hasattr(rows, "iloc") and hasattr(rows, "to_dict"):  # a DataFrame, converted one batch at a time
            frame: Any = rows
            for start in range(0, len(frame), self.batch_size):
                yield from frame.iloc[start : start + self.batch_size].to_dict("records")
            return
        yield from rows

    def _writer(self) -> redis.Redis:
        """A client for the batch job: the cache's server and options, but a reply timeout fit for big batches (the
        cache's own timeout is short on purpose, for online reads)."""
        kwargs = self.cache.connection.options.pool_kwargs()
        kwargs.pop("max_connections")
        kwargs.pop("timeout")
        kwargs["socket_timeout"] = self.write_timeout
        kwargs["socket_connect_timeout"] = max(kwargs["socket_connect_timeout"], 5.0)
        return redis.Redis(connection_pool=redis.ConnectionPool.from_url(self.cache.connection.target, **kwargs))

    def _run(self, records: Iterator[Mapping[str, Any]], progress: Callable[[int], None] | None) -> MaterializeSummary:
        """Read a batch, encode it, hand it to one writer thread, read the next while it is written: at most two
        batches are held (the one being written and the one being read), whatever the size of the input."""
        started = time.perf_counter()
        done = batches = 0
        client = self._writer()
        pending: Future[int] | None = None
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cachewise-features") as pool:
                for batch in _batched(records, self.batch_size):
                    keys, args = self._batch_call(batch)
                    del batch
                    if pending is not None:
                        done += pending.result()
                        batches += 1
                        if progress is not None:
                            progress(done)
                    pending = pool.submit(self._write_batch, client, keys, args)
                if pending is not None:
                    done += pending.result()
                    batches += 1
                    if progress is not None:
                        progress(done)
        finally:
            client.close()
            client.connection_pool.disconnect()
        return MaterializeSummary(rows=done, seconds=time.perf_counter() - started, batches=batches)

    def _batch_call(self, batch: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[KeyOrArg]]:
        """The script's keys and args for one batch (pure: no I/O)."""
        keys: list[str] = []
        args: list[KeyOrArg] = [self.ttl_ms, int(time.time() * 1000)]
        id_column = self.id_column
        for record in batch:
            try:
                entity_id = record[id_column]
            except KeyError:
                raise ValueError(f"row without the id column {id_column!r}: {sorted(record)}") from None
            if entity_id is None:
                raise ValueError(f"row with a null {id_column!r}")
            keys.append(self.prefix + str(entity_id))
            count_at = len(args)
            args.append(0)
            n = 0
            for name, value in record.items():
                if name == id_column:
                    continue
                if name == UPDATED_AT:
                    raise ValueError(f"{UPDATED_AT!r} is reserved for the write time; rename that column")
                args.append(name)
                args.append(encode_value(value))
                n += 1
            args[count_at] = n
        return keys, args

    @staticmethod
    def _write_batch(client: redis.Redis, keys: list[str], args: list[KeyOrArg]) -> int:
        """One batch, one atomic script call (idempotent: safe to run again after a failure)."""
        _MATERIALIZE(client, keys, args)
        return len(keys)

    # -- online reads (pure helpers) -------------------------------------------------------------------------
    @staticmethod
    def _from_hash(reply: Mapping[Any, Any] | None, max_age: float | None, now_ms: int) -> dict[str, Any] | None:
        if not reply:
            return None
        try:  # the fast path: bytes field names, JSON values
            out: dict[str, Any] = {field.decode(): _loads(raw) for field, raw in reply.items()}
        except (orjson.JSONDecodeError, AttributeError, UnicodeDecodeError):  # something another writer left
            out = {_text(field): decode_value(raw) for field, raw in reply.items()}
        stamp = out.pop(UPDATED_AT, None)
        return out if max_age is None or FeatureStore._fresh(stamp, max_age, now_ms) else None

    @staticmethod
    def _from_fields(
        reply: Sequence[Any] | None, features: Sequence[str], max_age: float | None, now_ms: int
    ) -> dict[str, Any] | None:
        if not reply or reply[0] is None:  # no updated_at: no such entity
            return None
        if not FeatureStore._fresh(decode_value(reply[0]), max_age, now_ms):
            return None
        return {name: None if raw is None else decode_value(raw) for name, raw in zip(features, reply[1:])}

    @staticmethod
    def _fresh(stamp: Any, max_age: float | None, now_ms: int) -> bool:
        if max_age is None:
            return True
        if not isinstance(stamp, (int, float)):
            return False  # no write time: cannot prove it is fresh
        return (now_ms - stamp) <= max_age * 1000

    def _queue(self, pipe: Any, ids: Sequence[Any], features: Sequence[str] | None) -> None:
        prefix = self.prefix
        if features is None:
            hgetall = pipe.hgetall
            for entity_id in ids:
                hgetall(prefix + str(entity_id))
        else:
            fields = [UPDATED_AT, *features]
            for entity_id in ids:
                pipe.hmget(prefix + str(entity_id), fields)

    def _decode_many(
        self, replies: Sequence[Any], features: Sequence[str] | None, max_age: float | None
    ) -> list[dict[str, Any] | None]:
        now_ms = int(time.time() * 1000)
        if features is None:
            return [self._from_hash(r, max_age, now_ms) for r in replies]
        return [self._from_fields(r, features, max_age, now_ms) for r in replies]

    @staticmethod
    def _age(stamp: Any) -> float | None:
        value = None if stamp is None else decode_value(stamp)
        if not isinstance(value, (int, float)):
            return None
        return max(0.0, time.time() - value / 1000)

    # -- sync reads ---------------------------------------------------------------------------------------
    def get(
        self, entity_id: Any, features: Sequence[str] | None = None, *, max_age: float | None = None
    ) -> dict[str, Any] | None:
        """One entity's features (all, or the ``features`` named: a missing one is ``None``); ``None`` when the
        entity is not stored, or is older than ``max_age`` seconds."""
        return self.get_many([entity_id], features, max_age=max_age)[0]

    def get_many(
        self, ids: Iterable[Any], features: Sequence[str] | None = None, *, max_age: float | None = None
    ) -> list[dict[str, Any] | None]:
        """Features of many entities in one round trip, in the order of ``ids`` (``None`` for a missing one)."""
        ids = list(ids)
        if not ids:
            return []
        features = list(features) if features is not None else None
        pipe = self.cache.connection.sync.pipeline(transaction=False)
        self._queue(pipe, ids, features)
        try:
            replies = pipe.execute()
        except SERVER_ERRORS as exc:
            self.cache._failed("features.get", exc, None)
            return [None] * len(ids)
        return self._decode_many(replies, features, max_age)

    def freshness(self, entity_id: Any) -> float | None:
        """Seconds since the entity was written, or ``None`` when it is not stored (or the server failed)."""
        try:
            stamp = self.cache.connection.sync.hget(self.key(entity_id), UPDATED_AT)
        except SERVER_ERRORS as exc:
            self.cache._failed("features.freshness", exc, None)
            return None
        return self._age(stamp)

    # -- asyncio reads ------------------------------------------------------------------------------------
    async def aget(
        self, entity_id: Any, features: Sequence[str] | None = None, *, max_age: float | None = None
    ) -> dict[str, Any] | None:
        """:meth:`get` for asyncio."""
        return (await self.aget_many([entity_id], features, max_age=max_age))[0]

    async def aget_many(
        self, ids: Iterable[Any], features: Sequence[str] | None = None, *, max_age: float | None = None
    ) -> list[dict[str, Any] | None]:
        """:meth:`get_many` for asyncio (one round trip)."""
        ids = list(ids)
        if not ids:
            return []
        features = list(features) if features is not None else None
        try:
            pipe = self.cache.connection.async_client().pipeline(transaction=False)
            self._queue(pipe, ids, features)
            replies = await pipe.execute()
        except SERVER_ERRORS as exc:
            self.cache._failed("features.aget", exc, None)
            return [None] * len(ids)
        return self._decode_many(replies, features, max_age)

    async def afreshness(self, entity_id: Any) -> float | None:
        """:meth:`freshness` for asyncio."""
        try:
            stamp = await self.cache.connection.acommand("HGET", self.key(entity_id), UPDATED_AT)
        except SERVER_ERRORS as exc:
            self.cache._failed("features.afreshness", exc, None)
            return None
        return self._age(stamp)

    def __repr__(self) -> str:
        return f"FeatureStore(entity={self.entity!r}, ttl_ms={self.ttl_ms}, batch_size={self.batch_size})"
