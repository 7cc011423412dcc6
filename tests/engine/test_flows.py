"""The read-through flows without a server: each flow is driven step by step with the replies a server would give,
and the test checks what it asks for next (the steps of :mod:`cachewise.engine.steps` and the commands it sends).

These are the decisions of cache-aside — lease, wait, share, refresh, release — checked in isolation; the contract
suites (``tests/test_cache.py``, ``tests/test_single_flight.py``) check the same behaviour end to end on real servers.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import pytest

from cachewise.breaker import CircuitBreaker
from cachewise.engine import ops
from cachewise.engine.context import Context, Request, Site
from cachewise.engine.firstread import FirstLease, LeaseRead, lease_answer, lease_read
from cachewise.engine.flows import Found, after_read, first_command, first_read, settle
from cachewise.engine.reads import FAILED, EntryReader
from cachewise.engine.stampede import MissOdds, Protection
from cachewise.engine.steps import FOLLOW, LEAD, Hold, Join, Joined, Listen, Load, Share, Spawn, Wait
from cachewise.engine.writes import EntryWriter
from cachewise.entries import commands
from cachewise.executor import Failed
from cachewise.failures import ErrorLog
from cachewise.keyspace import KeySpace
from cachewise.missing import MISSING
from cachewise.report import Reporter
from cachewise.runner import Send
from cachewise.serializers import JsonSerializer
from cachewise.stats import StatsRegistry

NS = "flows"
V = b"7"  # the namespace and group counters' value in these scripts


def context(protection: Protection | None = None, max_value_bytes: int | None = None) -> Context:
    space, stats, errors = KeySpace(NS), StatsRegistry(NS), ErrorLog()
    serializer = JsonSerializer()
    reader = EntryReader(NS, serializer, stats, errors)
    writer = EntryWriter(space, serializer, stats, errors, default_ttl=60, max_value_bytes=max_value_bytes)
    return Context(space, reader, writer, stats, Reporter(stats, errors, CircuitBreaker()), protection or Protection())


def request(ctx: Context, key: str = "k", *, background: bool = False, **protection: Any) -> Request:
    chosen = ctx.protection_with(None, protection)
    return Request(key, (), 60, None, None, "test", chosen, background)


def entry_bytes(
    value: bytes, *, written_ms: int, ttl_ms: int, grace_ms: int = 0, load_ms: int = 0, stamp: bytes = V
) -> bytes:
    """An entry as ``set.lua`` stores it, stamped with ``stamp`` (default :data:`V`) for both counters, no tags."""
    header = f"{stamp.decode()} {stamp.decode()} {written_ms} {ttl_ms} {grace_ms} {load_ms} 0".encode()
    return b"cw1j" + f"{len(header):04x}".encode() + header + value


def miss(ctx: Context, req: Request, seen: tuple[Any, ...] = (V, V)) -> Any:
    """What the first read of ``req`` found when its key was missing (the counters holding ``seen``)."""
    plan = ctx.read_plan(req.key, req.tokens)
    return first_read(ctx, plan, [None, *seen], req.scope, True)


class Script:
    """Drives a flow: :meth:`reply` answers the step it yielded and returns the next (None once it returned)."""

    def __init__(self, flow: Generator[Any, Any, Any] | None) -> None:
        assert flow is not None, "the read should have left work for a flow"
        self.flow = flow
        self.result: Any = MISSING
        self.step: Any = self._advance(lambda: next(flow))

    def _advance(self, move: Any) -> Any:
        try:
            self.step = move()
        except StopIteration as done:
            self.step, self.result = None, done.value
        return self.step

    def reply(self, value: Any) -> Any:
        return self._advance(lambda: self.flow.send(value))

    def throw(self, exc: BaseException) -> Any:
        return self._advance(lambda: self.flow.throw(exc))

    def expect(self, kind: type, name: str | None = None) -> Any:
        step = self.step
        assert type(step) is kind, f"expected a {kind.__name__} step, got {step!r}"
        if name is not None:
            assert step.command.name == name, f"expected the command {name!r}, got {step.command.name!r}"
        return step


LIFE = 1_000  # counters.lua's answer for each counter's life left (ms): shorter than any entry or lease here


def counted(values: tuple[bytes, ...] = (V, V), life: int = LIFE) -> list[Any]:
    """``counters.lua``'s reply: the counters' values and their lives left."""
    return [list(values), [life] * len(values)]


def granted(snapshot: tuple[bytes, ...] = (V, V)) -> list[Any]:
    """The reply to the acquire command: ``counters.lua``'s, then ``acquire.lua``'s "granted"."""
    return [counted(snapshot), [b"L"]]


def stored(current: tuple[bytes, ...] = (V, V)) -> list[Any]:
    """The reply to a write: ``counters.lua``'s, then ``set.lua``'s "stored"."""
    return [counted(current), 1]


def counts(ctx: Context) -> dict[str, Any]:
    """The non-zero event counters of ``ctx`` (not the times or ratios derived from them)."""
    totals = ctx.stats.snapshot().total.as_dict()
    return {k: v for k, v in totals.items() if v and not k.endswith(("seconds", "_ms", "ratio"))}


# -- a miss ---------------------------------------------------------------------------------------------------------
def test_a_miss_leads_takes_the_lease_loads_stores_and_shares() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    join = script.step
    assert join.entry == ctx.space.entry("k") and join.timeout > 0
    script.reply(LEAD)
    acquire = script.expect(Send, "acquire")
    assert acquire.command.count == 2  # the counters (kept alive), then the lease: one round trip
    script.reply(granted())
    load = script.expect(Load)
    hold: Hold = load.hold
    assert hold.key == "k" and hold.token and hold.stamps == (V, V)
    assert hold.counters == ctx.read_plan("k").counters
    script.reply(42)  # the loader's value
    write = script.expect(Send, "write")
    assert write.command.count == 2  # the counters kept alive past the entry, then the entry
    share = script.reply(stored())
    assert type(share) is Share and share.entry == ctx.space.entry("k") and share.payload == b"42"
    assert script.reply(None) is None and script.result == 42
    assert counts(ctx) == {"misses": 1, "loads": 1, "leases": 1, "sets": 1}


def test_the_value_is_stamped_with_the_counters_the_lease_was_taken_under() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req, seen=(None, None))))  # cold counters
    script.reply(LEAD)
    assert script.expect(Send, "counters").command.count == 1  # their values first, the lease stamped with them
    script.reply(counted((b"new1", b"new2")))  # counters.lua created them
    acquire = script.expect(Send, "acquire")
    assert b"new1" in acquire.command.payload and b"new2" in acquire.command.payload
    script.reply(granted(snapshot=(b"new1", b"new2")))
    assert script.expect(Load).hold.stamps == (b"new1", b"new2")
    write = script.reply("v")
    assert b"new1" in write.command.payload and b"new2" in write.command.payload


def test_a_cold_miss_takes_an_entry_stored_meanwhile_under_the_counters_it_finds() -> None:
    """The read found no counters (a cold namespace) while another caller created them, loaded and stored: the
    lease request carries the counters' values now, so that entry is taken as filled, not loaded a second time."""
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req, seen=(None, None))))
    script.reply(LEAD)
    script.reply(counted(life=10_000_000))  # created by the other caller: they hold V, and live long
    acquire = script.expect(Send, "acquire")
    assert acquire.command.count == 1  # the memo knows them now: the lease request goes alone
    assert acquire.command.payload.count(V) >= 2
    raw = entry_bytes(b'"theirs"', written_ms=int(time.time() * 1000), ttl_ms=60_000)
    share = script.reply(raw)  # acquire.lua: the entry is valid under the expected stamps
    assert type(share) is Share and share.payload == b'"theirs"'
    assert script.reply(None) is None and script.result == "theirs"
    assert "loads" not in counts(ctx)


def test_a_write_the_counters_moved_under_is_refused_and_not_shared() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    script.reply(granted())
    script.reply("v")
    assert script.reply(stored(current=(b"8", V))) is None  # a bump landed during the load: no Share
    assert script.result == "v"
    assert counts(ctx)["refused_writes"] == 1 and "sets" not in counts(ctx)


def test_a_follower_takes_the_leaders_payload_without_a_round_trip() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    assert script.reply(Joined(False, b'"shared"')) is None
    assert script.result == "shared"
    assert counts(ctx) == {"misses": 1, "waits": 1}


def test_a_follower_without_a_payload_reads_the_key_once() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    read = script.reply(FOLLOW)
    assert type(read) is Send and read.command.name == "read"
    now = int(time.time() * 1000)
    share = script.reply([entry_bytes(b"5", written_ms=now, ttl_ms=60_000), V, V])
    assert type(share) is Share and share.payload == b"5"  # later followers take what this read saw
    assert script.reply(None) is None and script.result == 5


def test_a_waiter_listens_rereads_and_takes_the_holders_value() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    assert type(script.reply([counted(), [b"W", b"800"]])) is Listen  # another process holds the lease
    reread = script.reply(True)
    assert type(reread) is Send and reread.command.name == "read"
    assert type(script.reply([None, V, V])) is Send  # not there yet: ask for the lease again...
    assert script.step.command.name == "acquire"
    wait = script.reply([counted(), [b"W", b"500"]])  # ...still held: now wait for the fill notification
    assert type(wait) is Wait and 0 < wait.timeout <= 0.55
    script.reply(True)
    now = int(time.time() * 1000)
    share = script.reply([entry_bytes(b'"theirs"', written_ms=now, ttl_ms=60_000), V, V])
    assert type(share) is Share
    assert script.reply(None) is None and script.result == "theirs"
    assert counts(ctx) == {"misses": 1, "waits": 1}  # one read that waited (two rounds): counted once


def test_without_notifications_a_waiter_polls_in_short_bounded_waits() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    script.reply([counted(), [b"W", b"800"]])
    script.reply(False)  # Listen: no notifications
    wait = script.reply([None, V, V])
    assert type(wait) is Wait and wait.timeout <= 0.05


def test_a_waiter_past_its_budget_loads_for_itself_and_does_not_store() -> None:
    ctx = context()
    req = request(ctx, max_wait=0.001)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    time.sleep(0.002)  # the holder keeps the lease past this waiter's budget
    load = script.reply([counted(), [b"W", b"800"]])
    assert type(load) is Load and load.hold is None
    assert script.reply("mine") is None and script.result == "mine"  # no write
    assert counts(ctx) == {"misses": 1, "wait_timeouts": 1, "loads": 1}


def test_a_key_filled_meanwhile_is_taken_from_the_lease_reply() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    now = int(time.time() * 1000)
    share = script.reply([counted(), entry_bytes(b"[1]", written_ms=now, ttl_ms=60_000)])
    assert type(share) is Share and share.payload == b"[1]"
    assert script.reply(None) is None and script.result == [1]


def test_a_failing_loader_gives_the_lease_back_then_raises() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    script.reply(granted())
    token = script.expect(Load).hold.token
    release = script.throw(RuntimeError("origin down"))
    assert type(release) is Send and release.command.name == "release"
    assert token.encode() in release.command.payload
    with pytest.raises(RuntimeError, match="origin down"):
        script.reply(1)


def test_a_value_too_large_to_cache_releases_the_lease_so_nobody_waits() -> None:
    ctx = context(max_value_bytes=4)
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    script.reply(granted())
    release = script.reply("far too large")
    assert type(release) is Send and release.command.name == "release"
    assert b"skip" in release.command.payload
    assert script.reply(1) is None and script.result == "far too large"
    assert counts(ctx)["oversize"] == 1


def test_a_server_failure_on_the_lease_loads_without_the_cache() -> None:
    ctx = context()
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    load = script.throw(ConnectionError("gone"))
    assert type(load) is Load and load.hold is None
    assert script.reply("v") is None and script.result == "v"


def test_a_failed_first_read_loads_without_lease_or_store() -> None:
    ctx = context()
    req = request(ctx)
    plan = ctx.read_plan("k")
    found = first_read(ctx, plan, Failed(ConnectionError("gone")), None, True)
    assert found[1] is FAILED
    script = Script(after_read(ctx, req, found))
    assert script.expect(Load).hold is None
    assert script.reply("v") is None and script.result == "v"


def test_without_single_flight_a_miss_loads_and_writes_plainly() -> None:
    ctx = context()
    req = request(ctx, single_flight=False)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    assert script.expect(Load).hold is None
    write = script.reply("v")
    assert type(write) is Send and write.command.name == "write"
    assert script.reply(stored()) is None and script.result == "v"  # no lease: nothing to share


# -- what the counters need: kept alive, read, or nothing -------------------------------------------------------------
def known(ctx: Context, values: tuple[bytes, ...] = (V, V), life_ms: int = 600_000) -> None:
    """This process learned (from ``counters.lua``) that the counters of ``k`` hold ``values`` for ``life_ms``."""
    ctx.writer.memo.learn(ctx.read_plan("k").counters, values, [life_ms] * len(values), time.monotonic())


def first_part(send: Send) -> bytes:
    return send.command.parts[0]


def test_a_plain_miss_keeps_the_counters_alive_once_then_writes_the_entry_alone() -> None:
    ctx = context()
    for expected_parts, reply in ((2, [counted(life=600_000), 1]), (1, 1)):
        req = request(ctx, single_flight=False)
        script = Script(after_read(ctx, req, miss(ctx, req)))
        write = script.reply("v")
        assert type(write) is Send and write.command.count == expected_parts
        assert script.reply(reply) is None and script.result == "v"
    assert counts(ctx)["sets"] == 2  # the first write taught the memo that the counters outlive the entry


def test_a_plain_miss_keeps_counters_alive_that_the_memo_does_not_know_to_outlive_the_entry() -> None:
    ctx = context()
    for values, life_ms, why in (((V, V), 30_000, "they end before the entry"), ((b"8", V), 600_000, "one moved")):
        known(ctx, values, life_ms)
        req = request(ctx, single_flight=False)
        write = Script(after_read(ctx, req, miss(ctx, req))).reply("v")
        assert write.command.count == 2 and commands.COUNTERS.sha.encode() in first_part(write), why


def test_a_miss_whose_counters_are_known_takes_the_lease_alone_and_verifies_the_write_with_a_read() -> None:
    ctx = context()
    known(ctx)
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    acquire = script.expect(Send, "acquire")
    assert acquire.command.count == 1  # no counters.lua: the read just saw them, and they live long enough
    load = script.reply([b"L"])
    assert load.hold.stamps == (V, V)  # stamped with what the read saw
    write = script.reply(42)
    assert write.command.count == 2 and first_part(write).startswith(b"*3\r\n$4\r\nMGET")
    share = script.reply([[V, V], 1])
    assert type(share) is Share and share.payload == b"42"
    assert script.reply(None) is None and counts(ctx)["sets"] == 1


def test_a_verified_write_whose_counters_moved_is_refused_and_the_memo_learns_the_new_value() -> None:
    ctx = context()
    known(ctx)
    req = request(ctx)
    script = Script(after_read(ctx, req, miss(ctx, req)))
    script.reply(LEAD)
    script.reply([b"L"])
    script.reply("v")
    assert script.reply([[b"8", V], 1]) is None  # a bump landed during the load: no Share
    assert counts(ctx)["refused_writes"] == 1
    assert ctx.writer.memo.stamps(ctx.read_plan("k").counters, "fresh") == [b"8", V]
    assert not ctx.writer.memo.alive(ctx.read_plan("k").counters, [b"8", V], 1)  # its life is not known


# -- a hit ----------------------------------------------------------------------------------------------------------
def test_a_fresh_hit_leaves_nothing_to_do() -> None:
    ctx = context(Protection(early_refresh=0))
    req = request(ctx)
    now = int(time.time() * 1000)
    raw = entry_bytes(b"1", written_ms=now, ttl_ms=60_000)
    found = first_read(ctx, ctx.read_plan("k"), [raw, V, V], None, True)
    assert found[0] == 1
    assert after_read(ctx, req, found) is None


def test_a_stale_hit_is_served_while_this_caller_refreshes_it() -> None:
    ctx = context()
    req = request(ctx, stale_ttl=30)
    now = int(time.time() * 1000)
    raw = entry_bytes(b'"old"', written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    found = first_read(ctx, ctx.read_plan("k"), [raw, V, V], None, True)
    assert found[0] == "old"
    script = Script(after_read(ctx, req, found))
    acquire = script.expect(Send, "acquire")
    assert f"{now - 2000}".encode() in acquire.command.payload  # the lease is refused if the entry was replaced
    script.reply(granted())
    assert script.expect(Load).hold is not None
    script.reply("new")
    script.reply(stored())
    assert script.reply(None) is None and script.result == "new"
    assert counts(ctx)["early_refreshes"] == 1


def test_a_stale_hit_in_async_code_refreshes_in_the_background() -> None:
    ctx = context()
    req = request(ctx, stale_ttl=30, background=True)
    now = int(time.time() * 1000)
    raw = entry_bytes(b'"old"', written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    found = first_read(ctx, ctx.read_plan("k"), [raw, V, V], None, True)
    script = Script(after_read(ctx, req, found))
    spawn = script.reply(granted())
    assert type(spawn) is Spawn
    assert script.reply(None) is None and script.result == "old"  # the caller gets the stale value at once
    background = Script(spawn.flow)
    assert background.expect(Load).hold is not None
    assert counts(ctx)["stale_served"] == 1


def test_a_stale_hit_another_caller_is_refreshing_is_served_as_is() -> None:
    ctx = context()
    req = request(ctx, stale_ttl=30)
    now = int(time.time() * 1000)
    raw = entry_bytes(b'"old"', written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    script = Script(after_read(ctx, req, first_read(ctx, ctx.read_plan("k"), [raw, V, V], None, True)))
    assert script.reply([counted(), [b"W", b"900"]]) is None
    assert script.result == "old" and counts(ctx)["stale_served"] == 1


def test_a_hit_stamped_with_a_moved_counter_is_a_miss() -> None:
    ctx = context()
    now = int(time.time() * 1000)
    raw = entry_bytes(b"1", written_ms=now, ttl_ms=60_000)
    found = first_read(ctx, ctx.read_plan("k"), [raw, b"8", V], None, True)  # bump_version since the write
    assert found[0] is MISSING
    assert counts(ctx) == {"misses": 1}


def test_an_entry_with_tags_the_caller_did_not_name_is_read_again_with_their_counters() -> None:
    ctx = context()
    now = int(time.time() * 1000)
    header = f"7 7 {now} 60000 0 0 1 t1 3".encode()
    raw = b"cw1j" + f"{len(header):04x}".encode() + header + b"1"
    flow = first_read(ctx, ctx.read_plan("k"), [raw, V, V], None, True)
    script = Script(flow)
    again = script.expect(Send, "read")
    assert ctx.space.tag_counter("t1") in again.command.all_keys()
    assert script.reply([raw, V, V, b"3"]) is None
    assert script.result[0] == 1


def test_a_set_verifies_known_counters_with_a_read_and_recreates_those_a_restart_lost() -> None:
    ctx = context()
    known(ctx)
    script = Script(ops.write(ctx, "k", 1, 60, (), None, "test"))
    first = script.expect(Send, "write")
    assert first.command.count == 2 and first_part(first).startswith(b"*3\r\n$4\r\nMGET")
    again = script.reply([[None, None], 1])  # the server restarted empty: the counters are gone
    assert type(again) is Send and commands.COUNTERS.sha.encode() in first_part(again)
    fresh = again.command.parts[0].rsplit(b"\r\n", 2)[-2]  # counters.lua's ARGV[2]: what it creates them with
    assert script.reply([counted((fresh, fresh), 120_000), 1]) is None and script.result is True
    assert counts(ctx)["sets"] == 1


# -- a first read that takes the lease (misses are likely) ----------------------------------------------------------
def test_the_odds_of_a_miss_follow_the_recent_reads_of_a_group() -> None:
    odds = MissOdds()
    assert not odds.likely("g")  # nothing seen: a plain read
    for _ in range(3):
        odds.observe("g", True)
    assert odds.likely("g") and odds.likely("other")  # a group not seen yet takes the cache's share
    for _ in range(40):
        odds.observe("g", False)
    assert not odds.likely("g")
    for _ in range(3):
        odds.observe("h", True)
    assert odds.likely("h") and not odds.likely("g")  # per group


def test_the_odds_go_quiet_once_the_cache_stops_missing_and_wake_at_the_next_miss() -> None:
    odds = MissOdds()
    assert odds.quiet  # nothing missed yet: the hit path asks nothing
    for _ in range(3):
        odds.observe("g", True)
    assert not odds.quiet and odds.likely("g")
    hits = 0
    while not odds.quiet:
        odds.observe("g", False)
        hits += 1
    assert hits == 81  # a share of 0.18 after three misses, times (15/16) per hit, falls under 1/1024
    assert not odds.likely("g") and not odds.likely("other")  # every group's share forgotten with the cache's
    odds.observe("g", True)
    assert not odds.quiet and not odds.likely("g")  # one miss: 1/16, under the 1/8 that takes the lease


def test_what_remains_after_the_first_read_is_settled_without_a_request() -> None:
    """The hit path asks :func:`settle` (a :class:`Site` is all it needs) and builds a request only for a flow."""
    ctx = context(Protection(early_refresh=0))
    site = Site(60, None, None, "test", ctx.protection)
    plan = ctx.read_plan("k")
    now = int(time.time() * 1000)
    hit = first_read(ctx, plan, [entry_bytes(b"1", written_ms=now, ttl_ms=60_000), V, V], None, True)
    assert settle(ctx, site.protection, hit) is None and ctx.odds.quiet  # a hit of a quiet cache changes nothing
    given = FirstLease("t", 1000, time.monotonic(), commands.lease_reply([b"L"]))
    assert settle(ctx, site.protection, hit, given) == "release"
    stale = entry_bytes(b"1", written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    assert settle(ctx, site.protection, first_read(ctx, plan, [stale, V, V], None, True)) == "stale"
    assert settle(ctx, site.protection, first_read(ctx, plan, Failed(OSError()), None, True)) == "failed"
    assert ctx.odds.quiet  # a read that failed says nothing of the odds
    assert settle(ctx, site.protection, first_read(ctx, plan, [None, V, V], None, True)) == "miss"
    assert not ctx.odds.quiet
    req = site.request("k", ())
    assert (req.key, req.tokens, req.where, req.protection) == ("k", (), "test", ctx.protection)


def likely(ctx: Context, key: str = "k") -> None:
    """Make ``ctx`` expect misses for the group of ``key`` (as after a run of misses)."""
    for _ in range(4):
        ctx.odds.observe(ctx.read_plan(key).group, True)


def leased_read(
    ctx: Context, req: Request, lease: list[Any], *, raw: bytes = b"", seen: tuple[Any, ...] = (V, V)
) -> tuple[LeaseRead, Found, FirstLease | None]:
    """Send the first read of ``req`` (it must take the lease with it) and answer it: the counters hold ``seen``,
    the entry is ``raw`` (b"": none), ``acquire.lua`` answers ``lease`` after it (``[]``: the entry looked valid)."""
    plan = ctx.read_plan(req.key, req.tokens)
    _, ask = first_command(ctx, req, plan)
    assert ask is not None, "misses are likely: the first read should take the lease"
    counters: Any = counted(seen) if ask.keep else list(seen)
    reply, first = lease_answer(ctx, plan, ask, [counters, [raw, *lease]])
    found = first_read(ctx, plan, reply, req.scope, True)
    assert type(found) is tuple
    return ask, found, first


def test_a_plain_read_is_sent_while_misses_are_rare_or_without_single_flight() -> None:
    ctx = context()
    req = request(ctx)
    plan = ctx.read_plan("k")
    command, ask = first_command(ctx, req, plan)
    assert ask is None and command is plan.command  # the plain MGET
    likely(ctx)
    assert first_command(ctx, request(ctx, single_flight=False), plan)[1] is None
    command, ask = first_command(ctx, req, plan)
    assert (
        ask is not None and command is ask.command and ask.command.count == 2
    )  # the counters, then acquire.lua: one round trip
    assert ask.keep and commands.COUNTERS.sha.encode() in ask.command.parts[0]  # not known yet: kept alive
    assert commands.ACQUIRE.sha.encode() in ask.command.parts[1] and b"read" in ask.command.parts[1]
    known(ctx)
    again = lease_read(ctx, req, ctx.read_plan("k"))
    assert not again.keep and again.command.parts[0].startswith(b"*3\r\n$4\r\nMGET")


def test_a_miss_whose_read_took_the_lease_loads_at_once_and_asks_for_no_lease() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx)
    ask, found, first = leased_read(ctx, req, [b"L", b"t"])
    assert found[0] is MISSING and first is not None and first.answer.kind == "granted"
    script = Script(after_read(ctx, req, found, first))
    join = script.expect(Join)
    assert join.holder  # it leads this process's callers, or goes on alone: it never follows
    load = script.reply(LEAD)
    assert type(load) is Load and load.hold.token == ask.token and load.hold.stamps == (V, V)
    write = script.reply(42)
    assert type(write) is Send and write.command.name == "write" and ask.token.encode() in write.command.payload
    share = script.reply(stored())  # the counters live 1 s: kept alive past the entry
    assert type(share) is Share and share.payload == b"42"
    assert script.reply(None) is None and script.result == 42
    assert counts(ctx) == {"misses": 1, "loads": 1, "leases": 1, "sets": 1}


def test_a_miss_whose_read_found_no_counters_stamps_with_the_values_they_are_created_with() -> None:
    ctx = context()
    likely(ctx)
    known(ctx, life_ms=600_000)
    req = request(ctx)
    _, found, first = leased_read(ctx, req, [b"L", b"t"], seen=(None, None))  # deleted meanwhile (a flush)
    script = Script(after_read(ctx, req, found, first))
    script.reply(LEAD)
    assert script.expect(Send, "counters").command.count == 1
    load = script.reply(counted((b"new1", b"new2")))
    assert type(load) is Load and load.hold.stamps == (b"new1", b"new2")


def test_a_read_told_to_wait_waits_without_asking_for_the_lease_again() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx)
    _, found, first = leased_read(ctx, req, [b"W", b"800"])
    script = Script(after_read(ctx, req, found, first))
    assert not script.expect(Join).holder
    assert type(script.reply(LEAD)) is Listen  # straight to waiting: the read's answer stands
    reread = script.reply(True)
    assert type(reread) is Send and reread.command.name == "read"
    now = int(time.time() * 1000)
    share = script.reply([entry_bytes(b'"theirs"', written_ms=now, ttl_ms=60_000), V, V])
    assert type(share) is Share
    assert script.reply(None) is None and script.result == "theirs"
    assert counts(ctx) == {"misses": 1, "waits": 1}


def test_a_follower_drops_what_its_read_was_told_and_asks_again() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx)
    _, found, first = leased_read(ctx, req, [b"W", b"800"])
    script = Script(after_read(ctx, req, found, first))
    script.reply(FOLLOW)  # another caller here led, and is done
    acquire = script.reply([None, V, V])  # its value is not there (refused): ask for the lease afresh
    assert type(acquire) is Send and acquire.command.name == "acquire"


def test_a_read_told_the_value_is_too_large_loads_without_storing() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx)
    _, found, first = leased_read(ctx, req, [b"S"])
    script = Script(after_read(ctx, req, found, first))
    assert script.expect(Load).hold is None
    assert script.reply("v") is None and script.result == "v"  # no write


def test_a_hit_whose_read_took_a_lease_gives_it_back() -> None:
    """The server judged the entry by counters this process remembered wrong (another process bumped one and
    stored anew): the client, judging by the values read beside it, sees a hit and releases the lease."""
    ctx = context(Protection(early_refresh=0))
    likely(ctx)
    req = request(ctx)
    now = int(time.time() * 1000)
    raw = entry_bytes(b"5", written_ms=now, ttl_ms=60_000, stamp=b"8")
    ask, found, first = leased_read(ctx, req, [b"L", b"t"], raw=raw, seen=(b"8", b"8"))
    assert found[0] == 5
    script = Script(after_read(ctx, req, found, first))
    release = script.expect(Send, "release")
    assert ask.token.encode() in release.command.payload
    assert script.reply(1) is None and script.result == 5
    assert counts(ctx) == {"hits": 1}


def test_a_valid_entry_comes_back_without_a_lease() -> None:
    ctx = context(Protection(early_refresh=0))
    likely(ctx)
    req = request(ctx)
    now = int(time.time() * 1000)
    _, found, first = leased_read(ctx, req, [], raw=entry_bytes(b"5", written_ms=now, ttl_ms=60_000))
    assert found[0] == 5 and first is None
    assert after_read(ctx, req, found, first) is None


def test_a_stale_hit_refreshes_under_the_lease_its_read_took() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx, stale_ttl=30)
    now = int(time.time() * 1000)
    raw = entry_bytes(b'"old"', written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    ask, found, first = leased_read(ctx, req, [b"L", b"t"], raw=raw)
    assert found[0] == "old"
    script = Script(after_read(ctx, req, found, first))
    load = script.expect(Load)  # no acquire: the read took the lease
    assert load.hold is not None and load.hold.token == ask.token
    script.reply("new")
    script.reply(stored())
    assert script.reply(None) is None and script.result == "new"


def test_a_stale_hit_whose_read_was_told_to_wait_is_served_stale() -> None:
    ctx = context()
    likely(ctx)
    req = request(ctx, stale_ttl=30)
    now = int(time.time() * 1000)
    raw = entry_bytes(b'"old"', written_ms=now - 2000, ttl_ms=1000, grace_ms=30_000)
    _, found, first = leased_read(ctx, req, [b"W", b"500"], raw=raw)
    script = Script(after_read(ctx, req, found, first))
    assert script.step is None and script.result == "old"  # someone else is reloading it
    assert counts(ctx)["stale_served"] == 1
