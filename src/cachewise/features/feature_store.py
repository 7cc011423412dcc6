"""A feature store for online inference: one Redis hash per entity, filled in batches from SQL, read in one trip.

Layout (readable with ``HGETALL`` from any client): ``{namespace}:features:{entity}:{id}`` holds one field per
feature plus ``updated_at`` (Unix time in milliseconds, taken on the writing client when the batch is encoded).
Values are JSON (see :mod:`cachewise.features.codec`, which also holds every encoding and decoding step).

Writes: batches of ``batch_size`` rows, each batch one Lua script that, per entity, deletes the old hash, writes
the new fields and sets the TTL.  A reader therefore never sees half an entity, and a feature dropped from the
query does not survive a refresh.  Batches are pipelined on one connection: a batch is sent and dropped, and its
reply read after the next batch has been read, so the server writes one batch while the next is read, and the
loader never holds more than one batch: a table of millions of rows streams with bounded memory (SQL goes through
a server-side cursor).

Reads: ``get_many`` sends its ``HGETALL`` s (or ``HMGET`` s for a subset of features) in one write: one round trip;
``max_age`` turns features older than that many seconds into ``None`` so a model can refuse stale features.
Reads fail open (a server error is counted and logged by the cache, and the entity reads as missing);
materialisation raises, because a batch job must know that it did not write.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis
from redis.crc import key_slot

from ..errors import ConfigurationError
from ..executor import Failed
from ..transport.command import Command
from ..transport.scripts import Script
from ..transport.stream import ClusterStream, Stream
from ..ttl import to_seconds
from .codec import UPDATED_AT, BatchEncoder, age, from_fields, from_hash, read_commands

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..cache import Cache

__all__ = ["UPDATED_AT", "FeatureStore", "MaterializeSummary"]

_MATERIALIZE = Script.beside(__package__ or "cachewise.features", "materialize.lua")
#: Sent before every batch in the same write, so the batch's EVALSHA finds the script even after a server restart.
_LOAD_SCRIPT = _MATERIALIZE.load


@dataclass(frozen=True)
class MaterializeSummary:
    """What one materialisation did."""

    rows: int
    seconds: float
    batches: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _batched(records: Iterator[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    while batch := list(itertools.islice(records, size)):
        yield batch


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
        batch_size: int = 500,
        write_timeout: float = 30.0,
    ) -> None:
        if not entity or ":" in entity:
            raise ConfigurationError(f"entity must be a non-empty name without ':', got {entity!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
        seconds = to_seconds(ttl)
        if not seconds > 0:
            raise ConfigurationError(f"the feature TTL must be > 0 seconds, got {ttl!r}")
        self.cache = cache
        self.entity = entity
        self.ttl_ms = max(1, round(seconds * 1000))
        self.id_column = id_column or f"{entity}_id"
        self.batch_size = batch_size
        self.write_timeout = write_timeout
        self._executor = cache.executor
        self.key = functools.partial(cache.keyspace.feature, entity)
        self._encoder = BatchEncoder(_MATERIALIZE.sha, self.key, entity, self.id_column, self.ttl_ms)

    # -- materialisation ------------------------------------------------------------------------------------
    def materialize(
        self, rows: Iterable[Mapping[str, Any]] | Any, *, progress: Callable[[int], None] | None = None
    ) -> MaterializeSummary:
        """Write ``rows`` (an iterable of mappings, a pandas or polars DataFrame, or a pyarrow Table) in batches;
        ``progress(rows_done)`` is called after each batch.  Raises the server's error if a batch could not be
        written (batches before it stay written: a re-run is safe)."""
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

    async def amaterialize(
        self, rows: Iterable[Mapping[str, Any]] | Any, *, progress: Callable[[int], None] | None = None
    ) -> MaterializeSummary:
        """:meth:`materialize` from asyncio: the batch job (encoding is CPU work, the writes stream on their own
        connection) runs in a worker thread, so the event loop stays free; ``progress`` is called from that thread.
        ``rows`` must not be tied to the event loop (an async iterator is not accepted)."""
        if hasattr(rows, "__aiter__"):
            raise TypeError("amaterialize takes rows that can be iterated from a thread, not an async iterator")
        return await asyncio.to_thread(self.materialize, rows, progress=progress)

    async def amaterialize_sql(
        self,
        engine: Engine,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> MaterializeSummary:
        """:meth:`materialize_sql` from asyncio (a sync SQLAlchemy ``engine``; the job runs in a worker thread)."""
        return await asyncio.to_thread(self.materialize_sql, engine, sql, params, progress=progress)

    def _records(self, rows: Iterable[Mapping[str, Any]] | Any) -> Iterator[Mapping[str, Any]]:
        """Rows as mappings; DataFrames and Arrow tables are converted one batch at a time, never whole."""
        size = self.batch_size
        if hasattr(rows, "iloc") and hasattr(rows, "to_dict"):  # pandas
            frame: Any = rows
            for start in range(0, len(frame), size):
                yield from frame.iloc[start : start + size].to_dict("records")
        elif hasattr(rows, "iter_slices") and hasattr(rows, "to_dicts"):  # polars
            for chunk in rows.iter_slices(size):
                yield from chunk.to_dicts()
        elif hasattr(rows, "to_batches") and hasattr(rows, "schema"):  # a pyarrow Table
            for record_batch in rows.to_batches(max_chunksize=size):
                yield from record_batch.to_pylist()
        else:
            yield from rows

    def _run(self, records: Iterator[Mapping[str, Any]], progress: Callable[[int], None] | None) -> MaterializeSummary:
        """Stream ``records`` to the server one batch at a time, on one connection, pipelined.

        Each batch is read, encoded, then sent without waiting for its reply; its rows and encoded arguments are
        dropped as soon as they are on the wire.  The reply is read only after the next batch has been read and
        encoded, so the server runs one batch's script while this process reads the next: the loader never holds
        more than one batch, whatever the size of the input, and no thread is needed.
        """
        started = time.perf_counter()
        done = batches = 0
        in_flight: tuple[int, int] | None = None  # (rows, script calls) sent whose replies have not been read
        stream = self._executor.stream(self.write_timeout)
        try:
            for batch in _batched(records, self.batch_size):
                try:
                    if stream.by_slot:  # a Cluster: one call per hash slot of the batch
                        payloads = self._encoder.encode_by_slot(batch, key_slot)
                    else:
                        payloads = [self._encoder.encode(batch)]
                except Exception:
                    if in_flight:  # confirm (and report) the batch before the bad row, then raise the row's error
                        done += self._await_batch(stream, in_flight)
                        batches += 1
                        in_flight = None
                        if progress is not None:
                            progress(done)
                    raise
                rows = len(batch)
                del batch
                if in_flight:
                    done += self._await_batch(stream, in_flight)
                    batches += 1
                    if progress is not None:
                        progress(done)
                in_flight = self._send_batch(stream, payloads, rows)
                del payloads
            if in_flight:
                done += self._await_batch(stream, in_flight)
                batches += 1
                if progress is not None:
                    progress(done)
        except BaseException:
            stream.close(broken=True)  # replies may still be pending on it: never reuse it
            raise
        stream.close()
        return MaterializeSummary(rows=done, seconds=time.perf_counter() - started, batches=batches)

    @staticmethod
    def _send_batch(stream: Stream | ClusterStream, payloads: list[bytes], rows: int) -> tuple[int, int]:
        """Send one encoded batch (one atomic, idempotent script call; on a Cluster one per hash slot) without
        reading its replies; the rows and calls sent.

        ``SCRIPT LOAD`` goes first in the same write, so the ``EVALSHA`` behind it finds the script even on a server
        that restarted or flushed its scripts since the last batch (the batch is dropped once sent: there is no
        retrying a ``NOSCRIPT``)."""
        stream.send(_LOAD_SCRIPT, *payloads)
        return rows, len(payloads)

    @staticmethod
    def _await_batch(stream: Stream | ClusterStream, sent: tuple[int, int]) -> int:
        """Read the replies of the batch sent last; raises the server's error if it was not written."""
        rows, calls = sent
        stream.receive()  # the SHA of SCRIPT LOAD
        written = sum(int(stream.receive()) for _ in range(calls))
        if written != rows:
            raise redis.ResponseError(f"the feature script wrote {written!r} entities of a batch of {rows}")
        return rows

    # -- online reads ------------------------------------------------------------------------------------
    # Each read is one command of ready-encoded parts (codec.read_commands) sent through the cache's executor as one
    # write, with raw replies decoded straight into dicts.  A failure (counted and logged) reads as missing entities.

    def _decode_many(
        self, replies: Any, count: int, features: Sequence[str] | None, max_age: float | None
    ) -> list[dict[str, Any] | None]:
        if type(replies) is Failed:
            return [None] * count
        if count == 1:
            replies = [replies]
        now_ms = int(time.time() * 1000)
        if features is None:
            return [from_hash(r, max_age, now_ms) for r in replies]
        return [from_fields(r, features, max_age, now_ms) for r in replies]

    def _reads(self, ids: list[Any], features: Sequence[str] | None, name: str) -> Command:
        return read_commands(self.key, ids, None if features is None else list(features), name)

    def _freshness(self, entity_id: Any, name: str) -> Command:
        key = self.key(entity_id)
        return Command.plain(name, "HGET", key, UPDATED_AT, keys=[key])

    @staticmethod
    def _age(reply: Any) -> float | None:
        return None if type(reply) is Failed else age(reply)

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
        replies = self._executor.attempt(self._reads(ids, features, "features.get"))
        return self._decode_many(replies, len(ids), features, max_age)

    def freshness(self, entity_id: Any) -> float | None:
        """Seconds since the entity was written, or ``None`` when it is not stored (or the server failed)."""
        return self._age(self._executor.attempt(self._freshness(entity_id, "features.freshness")))

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
        replies = await self._executor.aattempt(self._reads(ids, features, "features.aget"))
        return self._decode_many(replies, len(ids), features, max_age)

    async def afreshness(self, entity_id: Any) -> float | None:
        """:meth:`freshness` for asyncio."""
        return self._age(await self._executor.aattempt(self._freshness(entity_id, "features.afreshness")))

    def __repr__(self) -> str:
        return f"FeatureStore(entity={self.entity!r}, ttl_ms={self.ttl_ms}, batch_size={self.batch_size})"
