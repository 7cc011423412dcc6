"""The local tier's bookkeeping, without a server: fills that raced an invalidation lose, hits need a live link, a
lost link empties it, and memory stays within its bounds."""

from __future__ import annotations

import time

from cachewise.local.tier import LocalTier

KEYS = ("ns:a", "ns:_cw:{ns}v", "ns:_cw:{ns}v:a")


def coherent(maxsize: int = 100, max_bytes: int | None = None, ttl: float | None = None) -> LocalTier:
    tier = LocalTier(maxsize, max_bytes, ttl, max_lag=30.0)
    tier.links(["server"])
    tier.heard("server", time.monotonic())
    return tier


def fill(tier: LocalTier, key: str, value: object = "v", keys: tuple[str, ...] = KEYS, size: int = 10) -> bool:
    return tier.fill(key, (value, [], None, None), keys, tier.seq, 60.0, size)


def test_a_fill_is_served_until_one_of_its_keys_is_invalidated() -> None:
    tier = coherent()
    assert fill(tier, "a")
    assert tier.get("a") == ("v", [], None, None)
    assert tier.invalidate(["ns:_cw:{ns}v"]) == 1  # a counter it was judged with moved
    assert tier.get("a") is None
    assert tier.stats().invalidations == 1 and tier.stats().entries == 0


def test_a_fill_whose_keys_were_invalidated_after_its_ticket_is_refused() -> None:
    """The read/invalidation race: the read was sent (ticket), the server changed the entry and its invalidation was
    handled, then the reply with the old value arrives: it must not be kept."""
    tier = coherent()
    ticket = tier.seq
    tier.invalidate(["ns:a"])
    assert not tier.fill("a", ("old", [], None, None), KEYS, ticket, 60.0, 10)
    assert tier.get("a") is None
    # an invalidation of an unrelated key does not refuse it
    ticket = tier.seq
    tier.invalidate(["ns:other"])
    assert tier.fill("a", ("new", [], None, None), KEYS, ticket, 60.0, 10)


def test_nothing_is_served_or_stored_until_every_link_is_heard_and_within_max_lag() -> None:
    tier = LocalTier(100, None, None, max_lag=0.05)
    tier.links(["node-1", "node-2"])
    assert not fill(tier, "a")  # no link heard yet
    tier.heard("node-1", time.monotonic())
    assert not fill(tier, "a")  # one of two
    tier.heard("node-2", time.monotonic())
    assert fill(tier, "a") and tier.get("a") is not None
    time.sleep(0.08)  # no PING answered within max_lag: the link may be stalled, nothing is served
    assert tier.get("a") is None and not tier.stats().coherent
    tier.heard("node-1", time.monotonic())
    tier.heard("node-2", time.monotonic())
    assert tier.get("a") is not None


def test_a_lost_link_flushes_refuses_fills_in_flight_and_counts_the_resume() -> None:
    tier = coherent()
    fill(tier, "a")
    ticket = tier.seq
    tier.lost("server")
    assert tier.get("a") is None and tier.stats().entries == 0
    tier.heard("server", time.monotonic())
    assert not tier.fill("b", ("x", [], None, None), KEYS, ticket, 60.0, 1)  # read before the loss
    assert fill(tier, "b")
    stats = tier.stats()
    assert stats.flushes == 1 and stats.resumes == 2 and stats.coherent  # the first trust, then the resume


def test_lru_eviction_by_count_and_by_bytes() -> None:
    tier = coherent(maxsize=3)
    for k in "abc":
        fill(tier, k, keys=(f"ns:{k}",))
    tier.get("a")  # a is now the most recent
    fill(tier, "d", keys=("ns:d",))
    assert tier.get("b") is None and all(tier.get(k) is not None for k in "acd")
    assert tier.stats().evictions == 1

    tier = coherent(max_bytes=25)
    fill(tier, "a", keys=("ns:a",), size=10)
    fill(tier, "b", keys=("ns:b",), size=10)
    fill(tier, "c", keys=("ns:c",), size=10)  # 30 > 25: a goes
    assert tier.get("a") is None and tier.stats().bytes == 20
    assert not fill(tier, "huge", keys=("ns:h",), size=26)  # larger than the whole tier: never stored


def test_an_entry_never_outlives_the_server_ttl_nor_the_tier_ttl() -> None:
    tier = coherent(ttl=0.05)
    assert tier.fill("a", ("v", [], None, None), KEYS, tier.seq, 60.0, 1)
    assert tier.fill("b", ("v", [], None, None), ("ns:b",), tier.seq, 0.02, 1)
    assert not tier.fill("c", ("v", [], None, None), ("ns:c",), tier.seq, -1.0, 1)  # already past its TTL
    time.sleep(0.03)
    assert tier.get("b") is None and tier.get("a") is not None
    time.sleep(0.03)
    assert tier.get("a") is None


def test_a_flush_refuses_fills_in_flight_and_a_forked_child_starts_empty() -> None:
    tier = coherent()
    ticket = tier.seq
    fill(tier, "a")
    tier.flush()
    assert tier.get("a") is None
    assert not tier.fill("a", ("v", [], None, None), KEYS, ticket, 60.0, 1)
    fill(tier, "a")
    tier.reset()
    assert tier.get("a") is None and not tier.stats().coherent


def test_many_invalidated_keys_do_not_grow_without_bound() -> None:
    tier = coherent()
    ticket = tier.seq
    for i in range(70_000):
        tier.invalidate([f"ns:k{i}"])
    # the memory of invalidated keys was dropped: every ticket older than that is refused, newer ones are not
    assert not tier.fill("a", ("v", [], None, None), ("ns:unrelated",), ticket, 60.0, 1)
    assert fill(tier, "a", keys=("ns:unrelated",))
