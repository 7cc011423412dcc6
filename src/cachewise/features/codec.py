"""Feature values to bytes and back, and batches of rows to one ready-to-send server command: no I/O here.

Each value is JSON (orjson): ints stay ints, floats floats, strings come back as strings (stored quoted), ``None``
as ``null``, ``datetime``/``date`` as ISO strings (they come back as strings), ``Decimal`` (what PostgreSQL's
``avg`` over ``numeric`` returns) as a float, numpy scalars as their Python value.  ``updated_at`` (the write time,
Unix milliseconds) is reserved.

A batch is encoded straight into the bytes of one ``EVALSHA`` command (the Redis protocol's array of bulk
strings): the loader's per-row work is one JSON encoding per value and a few byte joins, with no intermediate list
of arguments for a client library to walk and encode again.
"""

from __future__ import annotations

import datetime
import decimal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..errors import ConfigurationError, InvalidKeyError, SerializationError
from ..transport.command import Command
from ..transport.resp import bulk

__all__ = [
    "UPDATED_AT",
    "BatchEncoder",
    "age",
    "decode_value",
    "encode_value",
    "from_fields",
    "from_hash",
    "is_fresh",
    "read_commands",
]

#: The hash field holding the write time (Unix milliseconds); a feature may not use this name.
UPDATED_AT = "updated_at"

_OPTION = orjson.OPT_SERIALIZE_NUMPY
_dumps = orjson.dumps
_loads = orjson.loads


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing values (NaT is a datetime subclass)
        return None
    if isinstance(value, (datetime.date, datetime.time)):  # subclasses orjson leaves to us: pandas' Timestamp
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        return item()
    raise TypeError(f"feature value of type {type(value).__name__} cannot be stored as JSON")


def encode_value(value: Any) -> bytes:
    """One feature value as the bytes stored in its hash field."""
    return _dumps(value, default=_default, option=_OPTION)


def decode_value(raw: bytes | str) -> Any:
    """A stored field back to its value (a field some other writer left that is not JSON comes back as text)."""
    try:
        return _loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


class BatchEncoder:
    """Rows of one entity kind → the ``EVALSHA`` of the materialise script for a batch of them.

    The script's keys are the entities' hashes; its args are ``ttl_ms, updated_at``, then per entity the number of
    features and their ``name, value`` pairs (see ``materialize.lua``).
    """

    __slots__ = ("_plans", "entity", "id_column", "key_of", "sha", "ttl_ms")

    def __init__(self, sha: str, key_of: Callable[[Any], str], entity: str, id_column: str, ttl_ms: int) -> None:
        self.sha = sha
        #: The server key of an entity's hash, from its id (:meth:`~cachewise.keyspace.KeySpace.feature`).
        self.key_of = key_of
        self.entity = entity
        self.id_column = id_column
        self.ttl_ms = ttl_ms
        #: column names of a row → (the bulk string of the feature count, (name, name as bulk string) per feature)
        self._plans: dict[tuple[str, ...], tuple[bytes, tuple[tuple[str, bytes], ...]]] = {}

    def _plan(self, names: tuple[str, ...]) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
        plan = self._plans.get(names)
        if plan is None:
            if self.id_column not in names:
                raise ConfigurationError(
                    f"row without the id column {self.id_column!r} (its columns: {sorted(map(str, names))}): "
                    "name the id column with FeatureStore(id_column=...)"
                )
            if UPDATED_AT in names:
                raise ConfigurationError(f"{UPDATED_AT!r} is reserved for the write time; rename that column")
            features = tuple((name, bulk(str(name).encode())) for name in names if name != self.id_column)
            plan = (bulk(b"%d" % len(features)), features)
            if len(self._plans) < 64:  # rows normally share one shape; don't grow without bound if they don't
                self._plans[names] = plan
        return plan

    def encode(self, batch: Sequence[Mapping[str, Any]], now_ms: int | None = None) -> bytes:
        """The command bytes writing ``batch``.  Raises :class:`~cachewise.errors.ConfigurationError` for a row
        without the id column (or with an ``updated_at`` column), :class:`~cachewise.errors.InvalidKeyError` for a
        null id, :class:`~cachewise.errors.SerializationError` for a value JSON cannot hold (all ``ValueError`` or
        ``TypeError``)."""
        keys: list[bytes] = []
        args = self._head(now_ms)
        for key, entity_args in self._entities(batch):
            keys.append(key)
            args += entity_args
        return self._call(keys, args)

    def encode_by_slot(
        self, batch: Sequence[Mapping[str, Any]], slot_of: Callable[[bytes], int], now_ms: int | None = None
    ) -> list[bytes]:
        """:meth:`encode` for a Cluster, where one script call may only touch the keys of one hash slot: one call per
        slot that ``batch``'s entities fall in (``slot_of(key)``), together writing the same rows."""
        head = self._head(now_ms)
        groups: dict[int, tuple[list[bytes], list[bytes]]] = {}
        for key, entity_args in self._entities(batch):
            slot = slot_of(key[key.index(b"\n") + 1 : -2])
            group = groups.get(slot)
            if group is None:
                group = groups[slot] = ([], list(head))
            group[0].append(key)
            group[1].extend(entity_args)
        return [self._call(keys, args) for keys, args in groups.values()]

    def _head(self, now_ms: int | None) -> list[bytes]:
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        return [bulk(b"%d" % self.ttl_ms), bulk(b"%d" % stamp)]

    def _call(self, keys: list[bytes], args: list[bytes]) -> bytes:
        head = b"*%d\r\n" % (3 + len(keys) + len(args))
        return b"".join((head, bulk(b"EVALSHA"), bulk(self.sha.encode()), bulk(b"%d" % len(keys)), *keys, *args))

    def _entities(self, batch: Sequence[Mapping[str, Any]]) -> Iterator[tuple[bytes, list[bytes]]]:
        """Per row: its hash's key and the script's arguments for it (as bulk strings)."""
        key_of, id_column = self.key_of, self.id_column
        for record in batch:
            count, features = self._plan(tuple(record))
            entity_id = record[id_column]
            if entity_id is None:
                raise InvalidKeyError(f"row with a null {id_column!r}: every row needs an id (filter NULL ids out)")
            args = [count]
            append = args.append
            try:
                for name, name_bulk in features:
                    value = _dumps(record[name], default=_default, option=_OPTION)
                    append(name_bulk)
                    append(b"$%d\r\n%b\r\n" % (len(value), value))
            except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
                raise self._unencodable(record, entity_id) from exc
            yield bulk(key_of(entity_id).encode()), args

    def _unencodable(self, record: Mapping[str, Any], entity_id: Any) -> SerializationError:
        for name, value in record.items():
            if name == self.id_column:
                continue
            try:
                encode_value(value)
            except TypeError:
                return SerializationError(
                    f"feature {name!r} of {self.entity} {entity_id!r}: a {type(value).__name__} cannot be stored "
                    "(use numbers, strings, booleans, None, dates, Decimal, or lists/dicts of them)"
                )
        return SerializationError(f"a feature of {self.entity} {entity_id!r} cannot be stored as JSON")


# -- reads ----------------------------------------------------------------------------------------------------------
def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def is_fresh(stamp: Any, max_age: float | None, now_ms: int) -> bool:
    """Whether a write time (Unix ms) is at most ``max_age`` seconds old (always, when ``max_age`` is None)."""
    if max_age is None:
        return True
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return False  # no write time: cannot prove it is fresh
    return (now_ms - stamp) <= max_age * 1000


def read_commands(
    key_of: Callable[[Any], str], ids: Sequence[Any], features: Sequence[str] | None, name: str
) -> Command:
    """The ``HGETALL`` (all features) or ``HMGET key updated_at *features`` of every id, as one command of one part
    per id (an error reply, such as another writer's key of another type, stays in its entity's place)."""
    keys = [key_of(i) for i in ids]
    if features is None:
        parts = [b"*2\r\n$7\r\nHGETALL\r\n%b" % bulk(key.encode()) for key in keys]
    else:
        fields = b"".join(bulk(str(f).encode()) for f in (UPDATED_AT, *features))
        start = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + 1 + len(features))
        parts = [start + bulk(key.encode()) + fields for key in keys]
    return Command(name, parts, [(key,) for key in keys], [None] * len(keys), strict=False)


def _pairs(reply: Any) -> Any:
    if isinstance(reply, dict):  # RESP3, or a client's reply callback
        return reply.items()
    it = iter(reply)  # RESP2: field, value, field, value, ...
    return zip(it, it)


def from_hash(reply: Any, max_age: float | None, now_ms: int) -> dict[str, Any] | None:
    """An ``HGETALL`` reply → the entity's features (``None``: not stored, older than ``max_age``, or not a hash)."""
    if not reply or isinstance(reply, Exception):  # empty, or an error reply (another writer's key of another type)
        return None
    try:  # the fast path: bytes field names, JSON values
        out: dict[str, Any] = {field.decode(): _loads(raw) for field, raw in _pairs(reply)}
    except (orjson.JSONDecodeError, AttributeError, UnicodeDecodeError):  # something another writer left
        out = {_text(field): decode_value(raw) for field, raw in _pairs(reply)}
    stamp = out.pop(UPDATED_AT, None)
    return out if max_age is None or is_fresh(stamp, max_age, now_ms) else None


def from_fields(reply: Any, features: Sequence[str], max_age: float | None, now_ms: int) -> dict[str, Any] | None:
    """An ``HMGET key updated_at *features`` reply → those features (a missing one is ``None``)."""
    if not reply or isinstance(reply, Exception) or reply[0] is None:  # no updated_at: no such entity
        return None
    if not is_fresh(decode_value(reply[0]), max_age, now_ms):
        return None
    return {name: None if raw is None else decode_value(raw) for name, raw in zip(features, reply[1:])}


def age(stamp: Any, now: float | None = None) -> float | None:
    """Seconds since a stored write time (``None`` when there is none)."""
    value = None if stamp is None or isinstance(stamp, Exception) else decode_value(stamp)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return max(0.0, (time.time() if now is None else now) - value / 1000)
