"""The metric families of a snapshot, without a server: names, bounded labels, the read partition, merging."""

from __future__ import annotations

import math

from cachewise.metrics.families import DIRECT, families, merge, since
from cachewise.stats import CacheStats, Counters, Durations


def _stats(**total: float) -> CacheStats:
    fn = Counters(hits=5, local_hits=2, misses=1, loads=1)
    return CacheStats(
        "ns",
        Counters(**{"hits": 9, "local_hits": 2, "stale_served": 1, "misses": 3, "loads": 3, **total}),  # type: ignore[arg-type]
        {"shop.product": fn},
        breaker="open",
        breaker_opens=2,
        limits={"login": {"allowed": 3, "refused": 2}},
    )


def _samples(fams: list, name: str) -> dict:  # type: ignore[type-arg]
    (family,) = [f for f in fams if f.name == name]
    return dict(family.samples)


def test_reads_are_partitioned_by_result_and_functions_sum_to_the_total() -> None:
    req = _samples(families(_stats()), "cachewise_requests_total")
    assert req[("ns", "shop.product", "hit")] == 3 and req[("ns", "shop.product", "local_hit")] == 2
    assert req[("ns", DIRECT, "hit")] == 9 - 5 - 1 and req[("ns", DIRECT, "stale")] == 1
    assert req[("ns", DIRECT, "miss")] == 2 and req[("ns", "shop.product", "miss")] == 1
    assert sum(req.values()) == 9 + 3  # every read once: hits + misses
    loads = _samples(families(_stats()), "cachewise_loads_total")
    assert loads == {("ns", DIRECT): 2, ("ns", "shop.product"): 1}


def test_breaker_limits_and_label_names_are_bounded() -> None:
    fams = families(_stats())
    assert _samples(fams, "cachewise_breaker_state") == {("ns",): 2}
    assert _samples(fams, "cachewise_breaker_opens_total") == {("ns",): 2}
    assert _samples(fams, "cachewise_ratelimit_decisions_total") == {
        ("ns", "login", "true"): 3,
        ("ns", "login", "false"): 2,
    }
    allowed = {"namespace", "function", "result", "limit", "allowed"}
    assert all(set(f.labels) <= allowed for f in fams)  # never a key, a tag or a user id
    assert all(f.name.startswith("cachewise_") for f in fams)
    assert all(f.name.endswith("_total") for f in fams if f.kind == "counter")


def test_histograms_are_cumulative_and_merge_sums_processes() -> None:
    durations = Durations(
        (0.001, 0.01), {"load": {None: (1, 2, 3), "shop.product": (0, 1, 0)}, "command": {}}, {"load": {None: 9.5}}
    )
    fams = families(_stats(), durations)
    loads = _samples(fams, "cachewise_load_duration_seconds")
    assert loads[("ns", DIRECT)] == ([(0.001, 1), (0.01, 3), (math.inf, 6)], 9.5)
    assert loads[("ns", "shop.product")] == ([(0.001, 0), (0.01, 1), (math.inf, 1)], 0.0)
    both = merge([fams, fams])
    assert _samples(both, "cachewise_load_duration_seconds")[("ns", DIRECT)] == (
        [(0.001, 2), (0.01, 6), (math.inf, 12)],
        19.0,
    )
    assert _samples(both, "cachewise_requests_total")[("ns", DIRECT, "miss")] == 4
    assert _samples(both, "cachewise_breaker_state") == {("ns",): 2}  # the worst, not a sum


def test_since_leaves_out_what_a_forked_child_inherited() -> None:
    before, after = families(_stats()), families(_stats(misses=10))
    diff = since(after, before)
    req = _samples(diff, "cachewise_requests_total")
    assert req[("ns", DIRECT, "miss")] == 7 and req[("ns", DIRECT, "hit")] == 0
    assert _samples(diff, "cachewise_breaker_state") == {("ns",): 2}  # a gauge is now's
