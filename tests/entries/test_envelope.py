"""Entry framing: pure logic, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachewise.entries.envelope import EntryError, meta_tokens, parse, payload_of


def frame(header: str, payload: bytes, code: bytes = b"j") -> bytes:
    return b"cw1" + code + f"{len(header):04x}".encode() + header.encode() + payload


def test_payload_and_fields() -> None:
    raw = frame("17 18 1764000000000 300000 5000 12 2 products 5 user%3A7 9 v=3", b'{"a":1}')
    assert payload_of(raw) == (b"j", b'{"a":1}')
    entry = parse(raw)
    assert (entry.namespace_version, entry.group_version, entry.ttl_ms) == (17, 18, 300000)
    assert entry.tags == {"products": 5, "user%3A7": 9}
    assert (entry.grace_ms, entry.load_ms) == (5000, 12)
    assert entry.meta == {"v": "3"}


@pytest.mark.parametrize("raw", [b"", b"hello", b"cw1j", b"cw1jzzzz{}", b"cw1jffff12"])
def test_not_an_entry(raw: bytes) -> None:
    with pytest.raises(EntryError):
        payload_of(raw)


@given(st.binary(max_size=64))
def test_any_bytes_either_parse_or_raise_entry_error(raw: bytes) -> None:
    try:
        payload_of(raw)
        parse(raw)
    except EntryError:
        pass


def test_meta_tokens() -> None:
    assert meta_tokens({"d": 12, "x": "y"}) == "d=12 x=y"
    with pytest.raises(ValueError):
        meta_tokens({"d": "a b"})
