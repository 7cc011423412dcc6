"""The Lua entry protocol, driven directly on every server kind: the ready commands sent on a plain redis-py
connection (no cachewise connection or executor in between)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from cachewise.entries import commands, verdicts
from cachewise.entries.envelope import parse
from cachewise.keyspace import KeySpace, tag_token
from cachewise.transport.command import Command

pytestmark = pytest.mark.one_server(
    "the scripts sent on one plain connection; on a cluster they go through the router, as the contract suite checks"
)


def send(client: redis.Redis, command: Command) -> Any:
    """Send ``command`` as cachewise would (its scripts loaded first): its reply, or the list of its replies."""
    conn = client.connection_pool.get_connection()
    try:
        loads = [s.load for s in dict.fromkeys(s for s in command.scripts if s is not None)]
        conn.send_packed_command([*loads, command.payload])
        for _ in loads:
            conn.read_response()
        replies = [conn.read_response() for _ in range(command.count)]
    finally:
        client.connection_pool.release(conn)
    return replies[0] if command.count == 1 else replies


def write(
    client: redis.Redis, ks: KeySpace, key: str, payload: bytes, ttl_ms: int, tokens: tuple[str, ...] = (), **kw: Any
) -> int:
    """Store an entry as a plain write does: the counters read (created when missing), then the entry stamped."""
    counters = commands.counter_keys(ks, key, tokens)
    fresh = commands.fresh_value()
    stamps, _ = send(client, commands.counters(counters, ttl_ms, fresh))
    return int(send(client, commands.write(ks, key, b"j", payload, ttl_ms, stamps, tokens, **kw)))


def read(client: redis.Redis, ks: KeySpace, key: str, tokens: tuple[str, ...] = ()) -> int:
    """The verdict of one read of ``key`` knowing ``tokens``."""
    return verdicts.judge(send(client, commands.read(ks, key, tokens)), tokens)[0]


def test_written_entry_carries_its_stamps(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    tokens = (tag_token("products"), tag_token("sales 2026"))
    assert write(raw, ks, "product:1", b'{"a":1}', 30_000, tokens, load_ms=12, write_id="w1") == 1
    stored = raw.get(ks.entry("product:1"))
    assert isinstance(stored, bytes)
    entry = parse(stored)
    assert entry.payload == b'{"a":1}' and entry.ttl_ms == 30_000 and entry.meta == {"w": "w1"}
    assert entry.load_ms == 12 and entry.grace_ms == 0
    assert abs(entry.written_at_ms / 1000 - time.time()) < 5
    assert entry.namespace_version == int(raw.get(ks.namespace_version) or 0)
    assert entry.group_version == int(raw.get(ks.group_version("product")) or 0)
    assert set(entry.tags) == {"products", "sales%202026"}
    assert read(raw, ks, "product:1", tokens) == verdicts.HIT
    assert read(raw, ks, "product:1") == verdicts.RECHECK  # tags the reader did not name: read again with them
    assert verdicts.tags_of(stored) == tokens


def test_a_lost_counter_makes_its_entries_stale_for_good(raw: redis.Redis, unique_namespace: str) -> None:
    """A counter evicted under memory pressure must not bring old entries back."""
    ks = KeySpace(unique_namespace)
    write(raw, ks, "product:1", b"1", 30_000)
    raw.delete(ks.group_version("product"))  # as if evicted
    assert read(raw, ks, "product:1") == verdicts.STALE
    write(raw, ks, "product:2", b"2", 30_000)  # recreates the counter, with a fresh value
    assert read(raw, ks, "product:1") == verdicts.STALE
    assert read(raw, ks, "product:2") == verdicts.HIT


def test_bump_creates_nothing_and_counts_what_it_bumped(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    assert sum(send(raw, commands.bump([ks.namespace_version, ks.tag_version("t")], "bump"))) == 0
    assert raw.exists(ks.namespace_version, ks.tag_version("t")) == 0
    write(raw, ks, "a", b"1", 30_000, (tag_token("t"),))
    assert sum(send(raw, commands.bump([ks.namespace_version, ks.tag_version("t")], "bump"))) == 2
    ttl = raw.pttl(ks.tag_version("t"))
    assert 0 < ttl <= 60_000  # INCR keeps the TTL (twice the entry's life: counters.lua)
    assert read(raw, ks, "a", (tag_token("t"),)) == verdicts.STALE


def test_counter_ttl_grows_with_the_longest_entry(raw: redis.Redis, unique_namespace: str) -> None:
    ks = KeySpace(unique_namespace)
    write(raw, ks, "a:1", b"1", 10_000)
    assert 10_000 < raw.pttl(ks.group_version("a")) <= 20_000  # created for twice the entry's life
    write(raw, ks, "a:2", b"1", 60_000)
    assert raw.pttl(ks.group_version("a")) > 110_000  # extended to twice the longer life
    write(raw, ks, "a:3", b"1", 1_000)
    assert raw.pttl(ks.group_version("a")) > 110_000  # never shortened


def test_counters_answer_their_values_and_lives(raw: redis.Redis, unique_namespace: str) -> None:
    """What the client's memo learns: each counter's life left, so that the next writes need not extend it."""
    ks = KeySpace(unique_namespace)
    counters = commands.counter_keys(ks, "a:1")
    values, lives = send(raw, commands.counters(counters, 10_000, "123"))
    assert values == [b"123", b"123"] and lives == [20_000, 20_000]  # created for twice the life asked
    raw.pexpire(counters[0], 15_000)
    values, lives = send(raw, commands.counters(counters, 10_000, "456"))
    assert values == [b"123", b"123"] and 14_000 < lives[0] <= 15_000  # still long enough: left alone
    assert 19_000 < lives[1] <= 20_000
    raw.pexpire(counters[0], 5_000)
    _, lives = send(raw, commands.counters(counters, 10_000, "456"))
    assert lives[0] == 20_000  # shorter than the life asked: extended to twice it


def test_a_refresh_lease_is_only_for_the_entry_the_caller_read(raw: redis.Redis, unique_namespace: str) -> None:
    """A caller that read a stale entry asks to refresh it; if another caller's refresh landed meanwhile (the entry
    was rewritten), there is nothing left to refresh: no lease, no second load."""
    ks = KeySpace(unique_namespace)
    write(raw, ks, "dash", b"1", 30_000)
    seen = verdicts.header_of(raw.get(ks.entry("dash")) or b"")[2]
    time.sleep(0.005)
    write(raw, ks, "dash", b"2", 30_000)  # another caller's refresh lands
    stale = commands.acquire(ks, "dash", "tok1", 5_000, refresh=True, seen_written=seen)
    assert send(raw, stale) is None  # Lua false
    now = verdicts.header_of(raw.get(ks.entry("dash")) or b"")[2]
    assert now != seen
    fresh = commands.acquire(ks, "dash", "tok2", 5_000, refresh=True, seen_written=now)
    assert send(raw, fresh) == [b"L", b"tok2"]
    assert send(raw, commands.acquire(ks, "dash", "tok3", 5_000, refresh=True, seen_written=now)) is None  # held
    raw.delete(ks.entry("dash"))
    gone = commands.acquire(ks, "gone", "tok4", 5_000, refresh=True, seen_written=now)
    assert send(raw, gone) is None  # nothing to refresh


def test_a_miss_lease_returns_an_entry_stamped_as_the_caller_read(raw: redis.Redis, unique_namespace: str) -> None:
    """After a miss the lease request returns the entry if it became valid meanwhile, judged against the counter
    values the caller read; an entry stamped with other values (a bump since) is no reason not to load."""
    ks = KeySpace(unique_namespace)
    write(raw, ks, "k", b"1", 30_000)
    values = send(raw, commands.read(ks, "k"))[1:]
    filled = send(raw, commands.acquire(ks, "k", "t1", 5_000, expected=values))
    assert isinstance(filled, bytes) and parse(filled).payload == b"1"
    moved = [values[0], b"not-the-group-version"]
    assert send(raw, commands.acquire(ks, "k", "t2", 5_000, expected=moved)) == [b"L", b"t2"]
    assert send(raw, commands.acquire(ks, "k", "t3", 5_000, expected=moved))[0] == b"W"  # t2 holds it
    # A lease holder's write lands only while its lease stands: a plain write voided t2's lease.
    assert write(raw, ks, "k", b"2", 30_000) == 1
    counters = commands.counter_keys(ks, "k")
    stamps, _ = send(raw, commands.counters(counters, 30_000, commands.fresh_value()))
    assert send(raw, commands.write(ks, "k", b"j", b"3", 30_000, stamps, token="t2")) == 0


def test_entry_and_lease_share_a_slot(unique_namespace: str) -> None:
    """What a script touches must hash to one slot (Redis Cluster refuses the script otherwise)."""
    from redis.crc import key_slot

    ks = KeySpace(unique_namespace)
    for key in ("product:42", "a{b}c", "{x}", "}{", "a}b", "x{}y", "é" * 300):
        entry = ks.entry(key)
        assert key_slot(entry.encode()) == key_slot(ks.lease(entry).encode()), key
    # ... and the entries of one namespace spread over the slots (a namespace in one slot would not scale).
    slots = {key_slot(ks.entry(f"product:{i}").encode()) for i in range(1000)}
    assert len(slots) > 900
