"""TTL policy: pure logic, no server."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from cachewise.errors import InvalidTTLError, TTLRequiredError
from cachewise.ttl import AlignedTTL, check_jitter, resolve_ttl_ms, to_seconds, until_next


def test_units() -> None:
    assert resolve_ttl_ms(300, None) == 300_000
    assert resolve_ttl_ms(0.25, None) == 250
    assert resolve_ttl_ms(timedelta(minutes=5), None) == 300_000
    assert resolve_ttl_ms(None, 60) == 60_000
    assert resolve_ttl_ms(0.0001, None) == 1  # never 0: PX 0 is an error


def test_missing_ttl_message_says_what_to_do() -> None:
    with pytest.raises(TTLRequiredError) as info:
        resolve_ttl_ms(None, None, where="cache.set('k')")
    message = str(info.value)
    assert "cache.set('k')" in message and "default_ttl" in message and "until_next" in message


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), True, "10", timedelta(0), 11 * 365 * 86400])
def test_invalid(bad: object) -> None:
    with pytest.raises(InvalidTTLError):
        to_seconds(bad)  # type: ignore[arg-type]


def test_jitter_bounds() -> None:
    rng = random.Random(1)
    values = [resolve_ttl_ms(100, None, jitter=0.1, rng=rng) for _ in range(2000)]
    assert 90_000 <= min(values) < 91_000 and 109_000 < max(values) <= 110_000
    for bad in (-0.1, 1, 1.5, True, "x"):
        with pytest.raises(InvalidTTLError):
            check_jitter(bad)  # type: ignore[arg-type]


def test_aligned_ttl_ends_at_next_boundary() -> None:
    hourly = until_next(hours=1)
    # 10:20:00 UTC → 40 minutes to 11:00.
    now = 1_800_000_000 - 1_800_000_000 % 3600 + 20 * 60
    assert hourly.seconds_from(now) == 40 * 60
    assert resolve_ttl_ms(hourly, None, now=now) == 40 * 60 * 1000
    # Exactly on a boundary: a whole period, never 0.
    assert hourly.seconds_from(now - 20 * 60) == 3600
    with_offset = until_next(hours=1, offset=timedelta(minutes=5))
    assert with_offset.seconds_from(now) == 45 * 60


def test_aligned_ttl_jitter_only_shortens() -> None:
    hourly = until_next(hours=1)
    now = 1_800_000_000 - 1_800_000_000 % 3600
    rng = random.Random(2)
    values = [resolve_ttl_ms(hourly, None, jitter=0.2, now=now + 60, rng=rng) for _ in range(500)]
    assert max(values) <= 59 * 60 * 1000
    assert min(values) >= 0.8 * 59 * 60 * 1000


def test_aligned_ttl_validation() -> None:
    with pytest.raises(InvalidTTLError):
        until_next()
    with pytest.raises(InvalidTTLError):
        AlignedTTL(every=60, offset=60)
