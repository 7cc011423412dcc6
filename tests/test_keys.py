"""Key building for function calls: pure logic, no server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import subprocess
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewise.errors import KeyTemplateError
from cachewise.keys import CallKey, canonical, template_fields
from cachewise.keyspace import tag_token


def f(a: Any, b: Any = 2, *, c: Any = 3) -> None: ...


def key_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    ck = CallKey(fn)
    return ck.key(ck.bind(args, kwargs))


def test_positional_keyword_default_give_one_key() -> None:
    assert key_of(f, 1) == key_of(f, a=1) == key_of(f, 1, 2) == key_of(f, 1, b=2, c=3) == key_of(f, c=3, a=1)
    assert key_of(f, 1) != key_of(f, 1, 3)


def test_key_names_module_and_qualname() -> None:
    assert key_of(f, 1).startswith("tests.test_keys.f:")


def test_binding_errors_are_python_type_errors() -> None:
    ck = CallKey(f)
    for args, kwargs in [((), {}), ((1, 2, 3), {}), ((1,), {"a": 1}), ((1,), {"zz": 1})]:
        with pytest.raises(TypeError):
            ck.bind(args, kwargs)


def test_varargs_and_positional_only() -> None:
    def g(a: int, /, *rest: int, **extra: int) -> None: ...

    assert key_of(g, 1, 2, 3, x=1, y=2) == key_of(g, 1, 2, 3, y=2, x=1)
    assert key_of(g, 1, 2, 3) != key_of(g, 1, 2)


def test_self_is_left_out() -> None:
    class A:
        def m(self, x: int) -> None: ...

    ck = CallKey(A.m)
    assert ck.key(ck.bind((A(), 1), {})) == ck.key(ck.bind((A(), 1), {}))


def test_templates() -> None:
    def g(user: Any, n: int) -> None: ...

    assert template_fields("u:{user.id}:{n}") == ["user", "n"]

    class U:
        id = 7

    ck = CallKey(g, "u:{user.id}:{n}", tags=("user:{user.id}", "all"))
    arguments = ck.bind((U(), 3), {})
    assert ck.key(arguments) == "u:7:3"
    assert ck.tags(arguments) == ("user:7", "all")
    assert ck.group == "u"
    assert CallKey(g, "{n}:{n}").group is None
    assert CallKey(g).group == "tests.test_keys.test_templates.<locals>.g"
    with pytest.raises(KeyTemplateError):
        CallKey(g, "x:{missing}")
    with pytest.raises(KeyTemplateError):
        CallKey(g, "x:{0}")
    with pytest.raises(KeyTemplateError):
        CallKey(g, "x:{user")


def test_rich_argument_types_have_keys() -> None:
    class Color(enum.Enum):
        RED = 1

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Keyed:
        def __cache_key__(self) -> str:
            return "k"

    values = [
        dt.datetime(2026, 1, 1),
        dt.date(2026, 1, 1),
        decimal.Decimal("1.0"),
        uuid.UUID(int=1),
        Color.RED,
        Point(1, 2),
        Keyed(),
        b"x",
        {1, 2},
        frozenset({1}),
        {"a": [1, (2, 3)]},
        {1: "int key"},
        2**70,
        float("nan"),
    ]
    keys = {key_of(f, v) for v in values}
    assert len(keys) == len(values)


def test_object_without_stable_text_is_refused() -> None:
    with pytest.raises(KeyTemplateError, match="__cache_key__"):
        key_of(f, object())


# Values that are equal only when they are the same value of the same type.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True in Python, but not as keys)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


@given(values, values)
def test_keys_are_deterministic_and_injective(a: Any, b: Any) -> None:
    assert key_of(f, a) == key_of(f, a)
    if same(a, b):
        assert key_of(f, a) == key_of(f, b)
    else:
        assert key_of(f, a) != key_of(f, b)


def test_canonical_dicts_ignore_insertion_order() -> None:
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})


def test_keys_are_stable_across_processes() -> None:
    code = (
        "from tests.test_keys import f, key_of; import datetime as d;"
        "print(key_of(f, {'x': [1, 2.5, None]}, b=d.date(2026, 1, 1)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == key_of(f, {"x": [1, 2.5, None]}, b=dt.date(2026, 1, 1))


def test_key_and_tokens_is_the_key_and_the_tag_tokens_of_one_bound_call() -> None:
    def fn(user_id: int, region: str = "eu") -> None: ...

    for tags in ((), ("users",), ("user:{user_id}", "region:{region}")):
        call_key = CallKey(fn, "user:{user_id}:{region}", tags)
        for args, kwargs in (((7,), {}), ((7, "us"), {}), ((), {"user_id": 7, "region": "us"})):
            arguments = call_key.bind(args, kwargs)
            assert call_key.key_and_tokens(args, kwargs) == (call_key.key(arguments), call_key.tag_tokens(arguments))
    assert CallKey(fn, None, ("user:{user_id}",)).key_and_tokens((7,), {})[1] == (tag_token("user:7"),)
