"""The rate limiter's policy without a server (:mod:`cachewise.ratelimit.policy`): limits, key segments, script
arguments, what a reply means, and the decisions taken when the server cannot be reached."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cachewise import ConfigurationError, InvalidKeyError
from cachewise.ratelimit import Decision, Limit, decide, degraded, hit_args, identity_token, resolve_limits


def test_limit_normalises_and_names_itself() -> None:
    assert Limit(10, timedelta(minutes=1)) == Limit(10, 60) == Limit(10, 60.0, burst=10)
    assert Limit(10, 60).period == 60.0 and Limit(10, 60).burst == 10
    assert Limit(10, 60, "fixed_window").burst is None
    assert Limit(100, 60).spec == "tb100p60s"
    assert Limit(100, 60, burst=20).spec == "tb100p60sb20"
    assert Limit(10, 1.5, "fixed_window").spec == "fw10p1500ms"
    assert Limit(10, 0.0015, "sliding_window").spec == "sw10p1500us"
    assert Limit(5, 60, burst=2).capacity == 2 and Limit(5, 60, "fixed_window").capacity == 5
    assert str(Limit(100, 60, burst=20)) == "100 per 60 s (token_bucket, burst 20)"
    assert Limit(3, 2).script_args() == [b"tb", b"3", b"2000000", b"3"]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, 60), {}, "whole number >= 1"),
        ((True, 60), {}, "whole number >= 1"),
        ((1.5, 60), {}, "whole number >= 1"),
        ((10, 0), {}, "between 1 ms and 366 days"),
        ((10, -1), {}, "between 1 ms and 366 days"),
        ((10, float("nan")), {}, "between 1 ms and 366 days"),
        ((10, 400 * 86400), {}, "between 1 ms and 366 days"),
        ((10, "60"), {}, "seconds .* or a timedelta"),
        ((10, 60), {"algorithm": "leaky"}, "unknown rate limiting algorithm"),
        ((10, 60), {"algorithm": "fixed_window", "burst": 5}, "burst= is for algorithm='token_bucket'"),
        ((10, 60), {"burst": 0}, "burst must be"),
        ((2_000_000, 1), {}, "finer than the server clock"),
    ],
)
def test_limit_refuses_what_it_cannot_enforce(args: tuple[Any, ...], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Limit(*args, **kwargs)


def test_resolve_limits() -> None:
    assert resolve_limits(5, 10, "fixed_window", None, None) == (Limit(5, 10, "fixed_window"),)
    assert resolve_limits(None, None, "token_bucket", None, Limit(1, 1)) == (Limit(1, 1),)
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_limits(5, 10, "token_bucket", None, [Limit(1, 1)])
    with pytest.raises(ConfigurationError, match="needs limit= and period="):
        resolve_limits(5, None, "token_bucket", None, None)
    with pytest.raises(ConfigurationError, match="non-empty list"):
        resolve_limits(None, None, "token_bucket", None, [])
    with pytest.raises(ConfigurationError, match="twice"):
        resolve_limits(None, None, "token_bucket", None, [Limit(1, 1), Limit(1, timedelta(seconds=1))])


def test_identity_token_is_safe_and_bounded() -> None:
    assert identity_token("ip:1.2.3.4") == "ip%3A1.2.3.4"
    assert identity_token("a b*?[]{}") == "a%20b%2A%3F%5B%5D%7B%7D"
    assert identity_token("a%3Ab") != identity_token("a:b")
    assert identity_token("") == ""
    long = identity_token("é" * 1000)
    assert len(long) <= 64 * 6 + 41 and long == identity_token("é" * 1000) and "/" in long
    assert long != identity_token("é" * 999 + "e")
    assert "/" not in identity_token("a/b" * 50) and identity_token("x" * 256) == "x" * 256
    assert identity_token("\udcff") == "%ED%B3%BF"  # a lone surrogate (surrogateescape'd bytes) is no crash
    with pytest.raises(InvalidKeyError, match="must be a str"):
        identity_token(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("cost", [0, -1, True, 1.5, "2"])
def test_hit_args_refuse_bad_costs(cost: Any) -> None:
    with pytest.raises(ConfigurationError, match="cost must be a whole number"):
        hit_args(cost, 10, [])


def test_hit_args() -> None:
    assert hit_args(3, 10, [b"x"]) == [3, b"x"]
    with pytest.raises(ConfigurationError, match="can never be allowed"):
        hit_args(11, 10, [])


def test_decide_reads_the_reply() -> None:
    limits = (Limit(10, 1), Limit(100, 60, "fixed_window"))
    allowed = decide(b"2 7 0 1500000", limits)
    assert allowed == Decision(True, 100, 7, 0.0, 1.5, limits[1])
    refused = decide(b"-1 0 250000 1000000", limits)
    assert refused == Decision(False, 10, 0, 0.25, 1.0, limits[0])
    assert isinstance(refused, Decision) and not refused.degraded
    with pytest.raises(AttributeError):
        refused.allowed = True  # type: ignore[misc]


def test_degraded_decisions() -> None:
    limits = (Limit(10, 1), Limit(100, 60))
    assert degraded(limits, True, 3, 1.0) == Decision(True, 10, 7, 0.0, 0.0, limits[0], degraded=True)
    assert degraded(limits, False, 3, 1.0) == Decision(False, 10, 0, 1.0, 1.0, limits[0], degraded=True)
