"""The feature codec without a server: batches encode to exactly the command redis-py would send, and replies of
every shape decode to features (or to ``None``)."""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pytest
import redis
import redis._parsers.encoders
import redis.connection

from cachewise.errors import ConfigurationError, InvalidKeyError, SerializationError
from cachewise.features.codec import (
    BatchEncoder,
    age,
    decode_value,
    encode_value,
    from_fields,
    from_hash,
    is_fresh,
    read_commands,
)

#: redis-py's packers (untyped): the reference for the bytes sent
_redis: Any = redis.connection
_encoders: Any = redis._parsers.encoders

SHA = "0123456789abcdef0123456789abcdef01234567"
PREFIX = "cwtest:features:user:"


def key_of(entity_id: Any) -> str:
    """The key of an entity's hash, as KeySpace.feature builds it for this prefix."""
    return PREFIX + str(entity_id)


TTL_MS = 7_200_000
NOW_MS = 1_700_000_000_000


def packed(*args: Any) -> bytes:
    """One command as redis-py packs it (its pure-Python packer, checked against its default one)."""
    python = b"".join(_redis.PythonRespSerializer(6000, _encoders.Encoder("utf-8", "strict", False).encode).pack(*args))
    assert python == b"".join(_redis.Connection().pack_command(*args))
    return python


def expected_evalsha(rows: list[tuple[Any, list[tuple[str, bytes]]]], now_ms: int = NOW_MS) -> bytes:
    """The materialise script's EVALSHA as redis-py would send it: ``rows`` are (id, [(name, JSON value), ...])."""
    keys = [PREFIX + str(entity_id) for entity_id, _ in rows]
    args: list[Any] = [TTL_MS, now_ms]
    for _, features in rows:
        args.append(len(features))
        for name, value in features:
            args += [name, value]
    return packed("EVALSHA", SHA, len(keys), *keys, *args)


def encoder() -> BatchEncoder:
    return BatchEncoder(SHA, key_of, "user", "user_id", TTL_MS)


def js(value: Any) -> bytes:
    return orjson.dumps(value)


# -- BatchEncoder ---------------------------------------------------------------------------------------------------
def test_a_batch_is_the_evalsha_redis_py_would_send() -> None:
    batch: list[dict[Any, Any]] = [
        {"user_id": 1, "score": 0.5, "tier": "gold", "n": 3},
        {"n": 4, "user_id": "u-2", "tier": None, "score": -1.25},  # same columns, another order
        {"user_id": 3},  # only the id: n = 0
        {"user_id": 4, 7: True, "nested": {"k": [1, "two", None]}, "text": 'quote " and \r\n'},  # an int column
        {"user_id": "ü 5", "score": 2**40, "tier": ""},
    ]
    expected = expected_evalsha(
        [
            (1, [("score", js(0.5)), ("tier", js("gold")), ("n", js(3))]),
            ("u-2", [("n", js(4)), ("tier", js(None)), ("score", js(-1.25))]),
            (3, []),
            (4, [("7", js(True)), ("nested", js({"k": [1, "two", None]})), ("text", js('quote " and \r\n'))]),
            ("ü 5", [("score", js(2**40)), ("tier", js(""))]),
        ]
    )
    enc = encoder()
    assert enc.encode(batch, now_ms=NOW_MS) == expected
    assert enc.encode(batch, now_ms=NOW_MS) == expected  # again, with every row's shape already planned


def test_many_shapes_in_one_batch() -> None:
    """More distinct column sets than the encoder remembers plans for: every row is still encoded as itself."""
    batch = [{"user_id": i, f"f{i}": i, "shared": -i} for i in range(200)]
    expected = expected_evalsha([(i, [(f"f{i}", js(i)), ("shared", js(-i))]) for i in range(200)])
    assert encoder().encode(batch, now_ms=NOW_MS) == expected


def test_an_empty_batch_and_the_write_time() -> None:
    assert encoder().encode([], now_ms=NOW_MS) == packed("EVALSHA", SHA, 0, TTL_MS, NOW_MS)
    before = int(time.time() * 1000)
    payload = encoder().encode([{"user_id": 1, "a": 1}])
    after = int(time.time() * 1000)
    stamps = [s for s in range(before, after + 1) if payload == expected_evalsha([(1, [("a", js(1))])], s)]
    assert len(stamps) == 1  # the current time in Unix milliseconds


def test_typed_values() -> None:
    row = {
        "user_id": 9,
        "dec": Decimal("2.25"),
        "i64": np.int64(7),
        "f32": np.float32(0.5),
        "f64": np.float64(1.5),
        "flag": np.bool_(True),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "aware": datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 1, 2),
        "array": np.array([1, 2, 3]),
        "nested": [Decimal("0.1"), np.int32(-3)],
        "nan": float("nan"),
    }
    expected = expected_evalsha(
        [
            (
                9,
                [
                    ("dec", b"2.25"),
                    ("i64", b"7"),
                    ("f32", b"0.5"),
                    ("f64", b"1.5"),
                    ("flag", b"true"),
                    ("when", b'"2024-01-02T03:04:05"'),
                    ("aware", b'"2024-01-02T03:04:05.000006+00:00"'),
                    ("day", b'"2024-01-02"'),
                    ("array", b"[1,2,3]"),
                    ("nested", b"[0.1,-3]"),
                    ("nan", b"null"),
                ],
            )
        ]
    )
    assert encoder().encode([row], now_ms=NOW_MS) == expected
    # and each comes back as its Python value (dates as their ISO strings)
    assert decode_value(encode_value(Decimal("2.25"))) == 2.25
    assert type(decode_value(encode_value(np.int64(7)))) is int
    assert decode_value(encode_value(datetime.date(2024, 1, 2))) == "2024-01-02"


def test_a_row_without_the_id_column() -> None:
    enc = encoder()
    with pytest.raises(ConfigurationError, match="id column 'user_id'"):
        enc.encode([{"user_id": 1, "a": 1}, {"id": 2, "a": 2}], now_ms=NOW_MS)
    with pytest.raises(ConfigurationError, match="'user_id'"):
        enc.encode([{"a": 1}], now_ms=NOW_MS)


def test_a_null_id() -> None:
    with pytest.raises(InvalidKeyError, match="null 'user_id'"):
        encoder().encode([{"user_id": 1, "a": 1}, {"user_id": None, "a": 2}], now_ms=NOW_MS)


def test_updated_at_is_reserved() -> None:
    with pytest.raises(ConfigurationError, match="'updated_at' is reserved"):
        encoder().encode([{"user_id": 1, "updated_at": 5}], now_ms=NOW_MS)
    # also when a row of the same other columns was encoded before
    enc = encoder()
    enc.encode([{"user_id": 1, "a": 1}], now_ms=NOW_MS)
    with pytest.raises(ConfigurationError, match="reserved"):
        enc.encode([{"user_id": 1, "a": 1, "updated_at": 5}], now_ms=NOW_MS)


def test_a_value_json_cannot_hold_names_the_feature_and_the_entity() -> None:
    batch = [{"user_id": 1, "a": 1, "b": "ok"}, {"user_id": 12, "a": 2, "b": object()}]
    with pytest.raises(SerializationError, match="feature 'b' of user 12: a object cannot be stored") as info:
        encoder().encode(batch, now_ms=NOW_MS)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(SerializationError, match="feature 'tags' of user 'x-1': a set cannot be stored"):
        encoder().encode([{"user_id": "x-1", "tags": {1, 2}}], now_ms=NOW_MS)


# -- reads ----------------------------------------------------------------------------------------------------------
def test_read_commands_are_redis_py_s_hgetall_and_hmget() -> None:
    ids: list[Any] = [1, "a", "ü-3", 10**20]
    reads = read_commands(key_of, ids, None, "get")
    assert reads.payload == b"".join(packed("HGETALL", PREFIX + str(i)) for i in ids)
    assert reads.count == len(ids) and reads.keys == tuple((PREFIX + str(i),) for i in ids) and not reads.strict
    features = ["f1", "f2", "é 3"]
    assert read_commands(key_of, ids, features, "get").payload == b"".join(
        packed("HMGET", PREFIX + str(i), "updated_at", *features) for i in ids
    )
    assert read_commands(key_of, ids, [], "get").payload == b"".join(
        packed("HMGET", PREFIX + str(i), "updated_at") for i in ids
    )
    with pytest.raises(ValueError, match="one or more parts"):  # nothing to read is no command (get_many([]): [])
        read_commands(key_of, [], None, "get")


STAMP = b"1700000000000"
FEATURES = {"a": 1, "s": "x", "none": None, "f": 0.5, "list": [1, 2]}


def test_from_hash_takes_resp2_and_resp3_replies() -> None:
    flat = [b"a", b"1", b"updated_at", STAMP, b"s", b'"x"', b"none", b"null", b"f", b"0.5", b"list", b"[1,2]"]
    assert from_hash(flat, None, NOW_MS) == FEATURES
    as_dict = dict(zip(flat[::2], flat[1::2]))
    assert from_hash(as_dict, None, NOW_MS) == FEATURES
    as_text = {k.decode(): v.decode() for k, v in as_dict.items()}  # a client decoding replies
    assert from_hash(as_text, None, NOW_MS) == FEATURES
    assert from_hash([b"updated_at", STAMP], None, NOW_MS) == {}  # stored, no features


@pytest.mark.parametrize("reply", [[], {}, None, redis.ResponseError("WRONGTYPE Operation against a key")])
def test_from_hash_of_nothing(reply: Any) -> None:
    assert from_hash(reply, None, NOW_MS) is None
    assert from_hash(reply, 60, NOW_MS) is None


def test_from_hash_keeps_what_another_writer_left_as_text() -> None:
    reply = [b"a", b"plain text", b"b", b"2", b"c", b"\xff\xfe", b"updated_at", STAMP]
    assert from_hash(reply, None, NOW_MS) == {"a": "plain text", "b": 2, "c": "\ufffd\ufffd"}


def test_from_hash_max_age() -> None:
    reply = [b"a", b"1", b"updated_at", STAMP]
    now = NOW_MS + 60_000  # written 60 s ago
    assert from_hash(reply, 60, now) == {"a": 1}
    assert from_hash(reply, 3600, now) == {"a": 1}
    assert from_hash(reply, 59.9, now) is None
    assert from_hash(reply, None, now + 10**9) == {"a": 1}
    assert from_hash([b"a", b"1"], 3600, now) is None  # no write time: cannot prove it fresh
    assert from_hash([b"a", b"1"], None, now) == {"a": 1}
    assert from_hash([b"a", b"1", b"updated_at", b"soon"], 3600, now) is None


def test_from_fields() -> None:
    features = ["a", "s", "missing"]
    assert from_fields([STAMP, b"1", b'"x"', None], features, None, NOW_MS) == {"a": 1, "s": "x", "missing": None}
    other_writer = from_fields([STAMP, b"odd", b"null", None], features, None, NOW_MS)
    assert other_writer == {"a": "odd", "s": None, "missing": None}
    assert from_fields([None, b"1", None, None], features, None, NOW_MS) is None  # no updated_at: not stored
    assert from_fields([None, None, None, None], features, None, NOW_MS) is None
    assert from_fields(redis.ResponseError("WRONGTYPE"), features, None, NOW_MS) is None
    assert from_fields([], features, None, NOW_MS) is None
    assert from_fields(None, features, None, NOW_MS) is None
    assert from_fields([STAMP], [], None, NOW_MS) == {}
    now = NOW_MS + 60_000
    assert from_fields([STAMP, b"1", None, None], features, 60, now) == {"a": 1, "s": None, "missing": None}
    assert from_fields([STAMP, b"1", None, None], features, 59, now) is None
    assert from_fields([b"not a time", b"1", None, None], features, 3600, now) is None


def test_age() -> None:
    now = 1_700_000_005.0
    assert age(STAMP, now) == 5.0
    assert age(STAMP.decode(), now) == 5.0
    assert age(b"1700000004500", now) == 0.5
    assert age(b"1700000010000", now) == 0.0  # a writer's clock ahead of ours: not negative
    assert age(None, now) is None
    assert age(redis.ResponseError("WRONGTYPE"), now) is None
    assert age(b"soon", now) is None
    assert age(b'"1700000000000"', now) is None  # a JSON string, not a number
    assert age(b"null", now) is None
    fresh = age(str(int(time.time() * 1000)).encode())
    assert fresh is not None and fresh >= 0.0


def test_pandas_timestamps_and_missing_values() -> None:
    import pandas as pd  # type: ignore[import-untyped]

    assert encode_value(pd.Timestamp("2024-01-02 03:04", tz="UTC")) == b'"2024-01-02T03:04:00+00:00"'
    assert encode_value(pd.NaT) == b"null" and encode_value(pd.NA) == b"null"
    frame = pd.DataFrame(
        {"user_id": [1, 2], "t": [pd.Timestamp("2024-01-01"), pd.NaT], "n": pd.array([5, None], dtype="Int64")}
    )
    encoder = BatchEncoder("a" * 40, lambda i: f"p:{i}", "user", "user_id", 1000)
    assert b'"2024-01-01T00:00:00"' in encoder.encode(frame.to_dict("records"), now_ms=1)


def test_reads_of_foreign_fields_fail_soft() -> None:
    assert from_hash([b"\xff", b"1"], None, 0) == {"\ufffd": 1}  # a field name that is not UTF-8
    assert age(b"true", now=10.0) is None and not is_fresh(True, 5, 0)


def test_the_unencodable_feature_is_named_not_the_id() -> None:
    encoder = BatchEncoder("a" * 40, lambda i: f"p:{i}", "user", "user_id", 1000)
    with pytest.raises(SerializationError, match="feature 'v'"):
        encoder.encode([{"user_id": b"x", "v": object()}], now_ms=1)
