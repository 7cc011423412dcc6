"""Server key layout: pure logic, no server."""

from __future__ import annotations

import pytest

from cachewise.errors import ConfigurationError, InvalidKeyError
from cachewise.keyspace import MAX_KEY_BYTES, KeySpace


def test_layout() -> None:
    ks = KeySpace("shop")
    assert ks.entry("product:42") == "shop:product:42"
    assert ks.group_of("product:42") == "product" and ks.group_of("plain") == "plain"
    assert ks.namespace_version == "shop:_cw:{shop}v"
    assert ks.group_version("product") == "shop:_cw:{shop}v:product"
    assert ks.tag_version("sales 2026") == "shop:_cw:{shop}t:sales%202026"
    assert ks.owns("shop:x") and not ks.owns("shopping:x")


def test_internal_keys_never_collide_with_user_keys() -> None:
    ks = KeySpace("shop")
    with pytest.raises(InvalidKeyError):
        ks.entry("_cw:v")
    assert ks.entry("_cwx") == "shop:_cwx"


@pytest.mark.parametrize("ns", ["", "a b", "x:y", "{x}", "a" * 65, 5])
def test_bad_namespaces(ns: object) -> None:
    with pytest.raises(ConfigurationError):
        KeySpace(ns)  # type: ignore[arg-type]


def test_long_keys_are_shortened_deterministically() -> None:
    ks = KeySpace("n")
    long_a, long_b = "report:" + "a" * 1000, "report:" + "a" * 999 + "b"
    assert ks.entry(long_a) == ks.entry(long_a)
    assert ks.entry(long_a) != ks.entry(long_b)
    assert len(ks.entry(long_a).encode()) < MAX_KEY_BYTES
    assert ks.group_of(long_a) == "report"
    short = "x" * 100
    assert ks.entry(short) == "n:" + short


def test_group_must_be_one_segment() -> None:
    with pytest.raises(InvalidKeyError):
        KeySpace("n").group_version("a:b")
