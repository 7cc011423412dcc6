"""The extension API (``cache.report``): counters, failures and warnings, as the cache itself reports them.
Pure: a stats registry, a rate-limited log and a breaker, no server."""

from __future__ import annotations

import logging

import pytest
import redis

from cachewise.breaker import CLOSED, OPEN, CircuitBreaker
from cachewise.failures import CircuitOpen, ErrorLog
from cachewise.report import Reporter
from cachewise.stats import StatsRegistry


def make(threshold: int = 2) -> tuple[Reporter, StatsRegistry, CircuitBreaker]:
    stats = StatsRegistry("ns")
    breaker = CircuitBreaker(threshold, 60.0)
    return Reporter(stats, ErrorLog(interval=60.0), breaker), stats, breaker


def test_counts_go_to_the_cache_and_to_the_scope() -> None:
    report, stats, _ = make()
    scope = report.scope("sessions:web")
    report.count("hits", scope)
    report.count("deletes", scope, 3)
    report.count("sets")
    report.roundtrip(0.002, scope)
    snap = stats.snapshot()
    assert snap.total.hits == 1 and snap.total.deletes == 3 and snap.total.sets == 1 and snap.total.roundtrips == 1
    one = snap.functions["sessions:web"]
    assert one.hits == 1 and one.deletes == 3 and one.sets == 0 and one.roundtrip_seconds == pytest.approx(0.002)
    assert report.scope("sessions:web") is scope


def test_failures_are_counted_logged_once_and_open_the_breaker_only_for_outages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report, stats, breaker = make(threshold=2)
    with caplog.at_level(logging.WARNING, logger="cachewise"):
        report.failure("features.get", redis.ResponseError("WRONGTYPE"))  # the server is up: not an outage
        report.failure("features.get", redis.ResponseError("WRONGTYPE"))
        assert breaker.state is CLOSED
        report.failure("features.get", redis.ConnectionError("refused"))
        report.failure("features.get", redis.ConnectionError("refused"))
    assert breaker.state is OPEN
    report.failure("features.get", CircuitOpen("circuit breaker open"))
    total = stats.snapshot().total
    assert total.errors == 4 and total.skipped == 1
    messages = [r.getMessage() for r in caplog.records]
    failed = [m for m in messages if "features.get failed, carrying on without the cache" in m]
    assert len(failed) == 2  # one per kind of error within the interval, not one per failure
    assert sum("circuit breaker open" in m for m in messages) == 1  # and the breaker's own message


def test_warnings_are_rate_limited_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    report, _, _ = make()
    with caplog.at_level(logging.WARNING, logger="cachewise"):
        for _ in range(3):
            report.warn("session:invalid", "session ab12 ignored")
        report.warn("session:tampered", "session cd34 ignored")
    assert [r.getMessage() for r in caplog.records] == ["session ab12 ignored", "session cd34 ignored"]
