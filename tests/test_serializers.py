"""Serializers: pure logic, no server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewise.errors import ConfigurationError, SerializationError
from cachewise.serializers import JsonSerializer, MsgpackSerializer, get_serializer

SERIALIZERS = [JsonSerializer(), MsgpackSerializer()]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20,
)
typed_values = st.one_of(
    # Aware datetimes come back with a fixed UTC offset (the zone's name is not kept), so compare those.
    st.datetimes(
        timezones=st.one_of(
            st.none(),
            st.builds(dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))),
        )
    ),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False),
    st.binary(max_size=50),
    st.sets(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5),
    st.frozensets(st.text(max_size=3), max_size=5),
)


@pytest.mark.parametrize("ser", SERIALIZERS, ids=lambda s: s.name)
@given(value=json_values)
def test_json_values_round_trip(ser: Any, value: Any) -> None:
    assert ser.loads(ser.dumps(value)) == value


@pytest.mark.parametrize("ser", SERIALIZERS, ids=lambda s: s.name)
@given(value=typed_values)
def test_typed_values_round_trip_with_their_type(ser: Any, value: Any) -> None:
    back = ser.loads(ser.dumps({"v": value, "in": [value]}))
    assert back == {"v": value, "in": [value]}
    assert type(back["v"]) is type(value)


@pytest.mark.parametrize("ser", SERIALIZERS, ids=lambda s: s.name)
def test_documented_json_conversions(ser: Any) -> None:
    class Color(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int

    u = uuid.UUID(int=5)
    assert ser.loads(ser.dumps({"t": (1, 2), "u": u, "e": Color.RED, "p": Point(1)})) == {
        "t": [1, 2],
        "u": str(u),
        "e": "red",
        "p": {"x": 1},
    }


@pytest.mark.parametrize("ser", SERIALIZERS, ids=lambda s: s.name)
def test_unsupported_types_are_refused_clearly(ser: Any) -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError, match="Opaque"):
        ser.dumps({"x": Opaque()})


def test_integers_beyond_64_bits_are_refused_by_json() -> None:
    with pytest.raises(SerializationError, match="64-bit"):
        JsonSerializer().dumps({"n": 2**64})
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps(2**64 - 1)) == 2**64 - 1


def test_a_dict_that_looks_like_a_tag_but_is_not_survives() -> None:
    ser = JsonSerializer()
    value = {"__cw__": "nope", "v": 1}
    assert ser.loads(ser.dumps(value)) == value
    value2 = {"__cw__": "datetime", "v": "not a date"}
    assert ser.loads(ser.dumps(value2)) == value2


def test_decimal_precision_is_kept() -> None:
    ser = JsonSerializer()
    assert ser.loads(ser.dumps(decimal.Decimal("0.1000000000000000000001"))) == decimal.Decimal(
        "0.1000000000000000000001"
    )
    assert ser.loads(ser.dumps(dt.time(1, 2, 3))) == dt.time(1, 2, 3)


def test_get_serializer() -> None:
    assert get_serializer(None).name == "json"
    assert get_serializer("msgpack").code == b"m"
    with pytest.raises(ConfigurationError, match="unknown serializer"):
        get_serializer("yaml")
    with pytest.raises(ConfigurationError, match="signing_key"):
        get_serializer("pickle")
    assert get_serializer("pickle", signed=True).code == b"p"

    class Custom:
        name = "custom"
        code = b"c"

        def dumps(self, value: Any) -> bytes:
            return repr(value).encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    assert get_serializer(Custom()).name == "custom"  # type: ignore[arg-type]

    class Broken:
        name = "broken"
        code = b"too long"

        def dumps(self, value: Any) -> bytes:
            return b""

        def loads(self, data: bytes) -> Any:
            return None

    with pytest.raises(ConfigurationError):
        get_serializer(Broken())  # type: ignore[arg-type]
