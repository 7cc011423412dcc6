"""The Lua entry protocol, driven directly on every server kind."""

from __future__ import annotations

import time

import redis

from cachewise import store
from cachewise.envelope import parse
from cachewise.keyspace import KeySpace, tag_token


def run(client: redis.Redis, call: store.Call) -> object:
    """Run the script as it is, with a plain redis-py client (no cachewise connection in between)."""
    return client.eval(call.script.source, len(call.keys), *call.keys, *call.args)


def test_written_entry_carries_its_stamps(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    tokens = (tag_token("products"), tag_token("sales 2026"))
    run(raw, store.write(ks, "product:1", b"j", b'{"a":1}', 30_000, tokens, load_ms=12, meta="k=v"))
    stored = raw.get(ks.entry("product:1"))
    assert isinstance(stored, bytes)
    entry = parse(stored)
    assert entry.payload == b'{"a":1}' and entry.ttl_ms == 30_000 and entry.meta == {"k": "v"}
    assert entry.load_ms == 12 and entry.grace_ms == 0
    assert abs(entry.written_at_ms / 1000 - time.time()) < 5
    assert entry.namespace_version == int(raw.get(ks.namespace_version) or 0)
    assert entry.group_version == int(raw.get(ks.group_version("product")) or 0)
    assert set(entry.tags) == {"products", "sales%202026"}
    assert run(raw, store.read(ks, "product:1")) == stored


def test_a_lost_counter_makes_its_entries_stale_for_good(raw: redis.Redis, unique_namespace: str) -> None:
    """A counter evicted under memory pressure must not bring old entries back."""
    ks = KeySpace(unique_namespace)
    run(raw, store.write(ks, "product:1", b"j", b"1", 30_000))
    raw.delete(ks.group_version("product"))  # as if evicted
    assert run(raw, store.read(ks, "product:1")) is None
    run(raw, store.write(ks, "product:2", b"j", b"2", 30_000))  # recreates the counter, with a fresh value
    assert run(raw, store.read(ks, "product:1")) is None
    assert run(raw, store.read(ks, "product:2")) is not None


def test_bump_creates_nothing_and_counts_what_it_bumped(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    assert run(raw, store.bump([ks.namespace_version, ks.tag_version("t")])) == 0
    assert raw.exists(ks.namespace_version, ks.tag_version("t")) == 0
    run(raw, store.write(ks, "a", b"j", b"1", 30_000, (tag_token("t"),)))
    assert run(raw, store.bump([ks.namespace_version, ks.tag_version("t")])) == 2
    ttl = raw.pttl(ks.tag_version("t"))
    assert 0 < ttl <= 30_000  # INCR keeps the TTL


def test_counter_ttl_grows_with_the_longest_entry(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    run(raw, store.write(ks, "a:1", b"j", b"1", 10_000))
    assert raw.pttl(ks.group_version("a")) <= 10_000
    run(raw, store.write(ks, "a:2", b"j", b"1", 60_000))
    assert raw.pttl(ks.group_version("a")) > 50_000
    run(raw, store.write(ks, "a:3", b"j", b"1", 1_000))
    assert raw.pttl(ks.group_version("a")) > 50_000  # never shortened


def test_a_refresh_lease_is_only_for_the_entry_the_caller_read(raw: redis.Redis, unique_namespace: str) -> None:
    """A caller that read a stale entry asks to refresh it; if another caller's refresh landed meanwhile (the entry
    was rewritten), there is nothing left to refresh: no lease, no second load."""
    ks = KeySpace(unique_namespace)
    run(raw, store.write(ks, "dash", b"j", b"1", 30_000))
    seen = store.header_of(raw.get(ks.entry("dash")) or b"")[2]
    time.sleep(0.005)
    run(raw, store.write(ks, "dash", b"j", b"2", 30_000))  # another caller's refresh lands
    stale = store.acquire(ks, "dash", (), "tok1", 5_000, refresh=True, seen_written=seen)
    assert run(raw, stale) is None  # Lua false
    now = store.header_of(raw.get(ks.entry("dash")) or b"")[2]
    assert now != seen
    fresh = store.acquire(ks, "dash", (), "tok2", 5_000, refresh=True, seen_written=now)
    assert run(raw, fresh) == [b"L", b"tok2"]
    assert run(raw, store.acquire(ks, "dash", (), "tok3", 5_000, refresh=True, seen_written=now)) is None  # held
    raw.delete(ks.entry("dash"))
    gone = store.acquire(ks, "gone", (), "tok4", 5_000, refresh=True, seen_written=now)
    assert run(raw, gone) is None  # nothing to refresh
