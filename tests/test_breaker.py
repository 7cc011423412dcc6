"""The circuit breaker's state machine, with an injected clock (no server, no waiting)."""

from __future__ import annotations

from cachewise.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clear_holds_exactly_while_closed_without_failures() -> None:
    """``clear`` is what the executor reads instead of calling allow() and success(): it must be False whenever
    either call would do something."""
    clock = Clock()
    breaker = CircuitBreaker(2, 1.0, clock=clock)
    assert breaker.clear and breaker.state is CLOSED

    breaker.failure()  # one failure: still closed, but a success must now reset the count
    assert breaker.state is CLOSED and not breaker.clear and breaker.failures == 1
    breaker.success()
    assert breaker.clear and breaker.failures == 0

    breaker.failure()
    breaker.failure()  # the threshold: open
    assert breaker.state is OPEN and not breaker.clear
    assert not breaker.allow()
    clock.now += 1.5
    assert breaker.allow() and breaker.state is HALF_OPEN and not breaker.clear  # the probe goes
    breaker.failure()  # the probe failed: open again
    assert breaker.state is OPEN and not breaker.clear and breaker.opens == 2
    clock.now += 1.5
    assert breaker.allow()
    breaker.success()  # the probe answered: closed, clear
    assert breaker.state is CLOSED and breaker.clear and breaker.failures == 0


def test_failures_in_a_row_open_it_and_a_success_between_resets_the_count() -> None:
    breaker = CircuitBreaker(3, 1.0, clock=Clock())
    for _ in range(2):
        breaker.failure()
    breaker.success()
    for _ in range(2):
        breaker.failure()
    assert breaker.state is CLOSED
    breaker.failure()
    assert breaker.state is OPEN and breaker.opens == 1
