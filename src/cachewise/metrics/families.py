"""What a cache's counters look like as Prometheus metric families, without I/O and without ``prometheus_client``.

:func:`families` turns one :class:`~cachewise.stats.CacheStats` snapshot (and, when tracked, its
:class:`~cachewise.stats.Durations`) into :class:`Family` values named by Prometheus conventions; the exporter
(:mod:`cachewise.metrics.prometheus`) only renders them.  Labels are bounded: the namespace, the cached function's
qualified name (``(direct)`` for calls made on the cache itself), a result out of a fixed set, a limiter's name —
never a key, a tag or a user id.

Reads are partitioned by ``result``: ``hit`` (answered by the server, fresh), ``local_hit`` (answered by the
process-local tier), ``stale`` (a stale value served while another caller reloads it) and ``miss``; their sum is every
read.  Server errors and breaker skips overlap reads and writes, so they are counters of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from ..stats import CacheStats, Counters, Durations

__all__ = ["BREAKER_STATES", "DIRECT", "Family", "families", "merge", "since"]

#: The ``function`` label of what was counted on the cache itself (``cache.get``, ``cache.get_or_set``...).
DIRECT = "(direct)"

#: ``cachewise_breaker_state``'s values.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

#: Counters of :class:`~cachewise.stats.Counters` exported one to one: (field, metric name, help).
_COUNTERS = (
    ("loads", "cachewise_loads_total", "Loads of a value from its source (the origin was called)."),
    ("leases", "cachewise_lease_loads_total", "Loads made holding the key's lease (one per cold key, every process)."),
    ("waits", "cachewise_lease_waits_total", "Reads that waited for another caller's load instead of loading."),
    ("wait_timeouts", "cachewise_lease_wait_timeouts_total", "Waiters that gave up waiting and loaded themselves."),
    ("early_refreshes", "cachewise_early_refreshes_total", "Hits refreshed before they expired (XFetch)."),
    ("refused_writes", "cachewise_refused_writes_total", "Loaded values not stored: invalidated during the load."),
    ("sets", "cachewise_sets_total", "Values written."),
    ("deletes", "cachewise_deletes_total", "Keys deleted."),
    ("errors", "cachewise_errors_total", "Server errors (the call failed open)."),
    ("skipped", "cachewise_skipped_total", "Calls that skipped the server: its circuit breaker was open."),
    ("invalid", "cachewise_invalid_total", "Values under a cache key that were not a readable entry."),
    ("oversize", "cachewise_oversize_total", "Values not stored: larger than max_value_bytes."),
    ("tampered", "cachewise_tampered_total", "Values whose signature did not verify."),
)


@dataclass(frozen=True)
class Family:
    """One metric family: ``kind`` is ``counter``, ``gauge`` or ``histogram``.  ``samples``: (label values in the
    order of ``labels``, value); a histogram's value is ``(cumulative bucket counts by upper bound, sum)``."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)


def families(stats: CacheStats, durations: Durations | None = None) -> list[Family]:
    """The metric families of one cache's snapshot."""
    ns = stats.namespace
    scopes = _scopes(stats)
    out = []
    requests = Family("cachewise_requests_total", "counter", "Reads, by result.", ("namespace", "function", "result"))
    for name, c in scopes:
        server_hits = c.hits - c.local_hits - c.stale_served
        for result, value in (
            ("hit", server_hits),
            ("local_hit", c.local_hits),
            ("stale", c.stale_served),
            ("miss", c.misses),
        ):
            requests.samples.append(((ns, name, result), value))
    out.append(requests)
    for attr, metric, text in _COUNTERS:
        family = Family(metric, "counter", text, ("namespace", "function"))
        family.samples.extend(((ns, name), getattr(c, attr)) for name, c in scopes)
        out.append(family)
    if durations is not None:
        for kind, metric, text in (
            ("load", "cachewise_load_duration_seconds", "How long loads from the source took."),
            ("command", "cachewise_command_duration_seconds", "Server round trips, as the client timed them."),
        ):
            family = Family(metric, "histogram", text, ("namespace", "function"))
            for scope, counts in sorted(durations.counts[kind].items(), key=lambda kv: kv[0] or ""):
                cumulative, running = [], 0
                for bound, count in zip((*durations.bounds, float("inf")), counts, strict=True):
                    running += count
                    cumulative.append((bound, running))
                family.samples.append(((ns, scope or DIRECT), (cumulative, durations.sums[kind].get(scope, 0.0))))
            out.append(family)
    out.append(
        Family(
            "cachewise_breaker_state",
            "gauge",
            "The server's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ("namespace",),
            [((ns,), BREAKER_STATES.get(stats.breaker, 2))],
        )
    )
    out.append(
        Family("cachewise_breaker_opens_total", "counter", "Times the breaker opened.", ("namespace",),
               [((ns,), stats.breaker_opens)])
    )  # fmt: skip
    decisions = Family(
        "cachewise_ratelimit_decisions_total", "counter", "Rate-limit decisions.", ("namespace", "limit", "allowed")
    )
    for limit, decided in sorted(stats.limits.items()):
        decisions.samples.append(((ns, limit, "true"), decided["allowed"]))
        decisions.samples.append(((ns, limit, "false"), decided["refused"]))
    out.append(decisions)
    if stats.local is not None:
        local = stats.local
        for metric, kind, text, value in (
            ("cachewise_local_entries", "gauge", "Entries in the process-local tier.", local.entries),
            ("cachewise_local_bytes", "gauge", "Bytes of the local tier's entries (as stored).", local.bytes),
            ("cachewise_local_coherent", "gauge", "1 while the local tier may serve (its link is live).",
             int(local.coherent)),
            ("cachewise_local_evictions_total", "counter", "Local entries evicted (LRU).", local.evictions),
            ("cachewise_local_invalidations_total", "counter", "Invalidations received.", local.invalidations),
            ("cachewise_local_flushes_total", "counter", "Times the local tier was emptied.", local.flushes),
        ):  # fmt: skip
            out.append(Family(metric, kind, text, ("namespace",), [((ns,), value)]))
    return out


def merge(parts: Iterable[list[Family]]) -> list[Family]:
    """Families of several processes (or caches) as one: samples with the same labels are summed (a gauge too:
    entries of every process; the breaker state takes the worst)."""
    merged: dict[str, Family] = {}
    values: dict[str, dict[tuple[str, ...], Any]] = {}
    for part in parts:
        for family in part:
            if family.name not in merged:
                merged[family.name] = Family(family.name, family.kind, family.help, family.labels)
                values[family.name] = {}
            into = values[family.name]
            for labels, value in family.samples:
                into[labels] = value if labels not in into else _add(family, into[labels], value)
    for name, family in merged.items():
        family.samples.extend(values[name].items())
    return list(merged.values())


def since(now: list[Family], base: list[Family]) -> list[Family]:
    """What was counted between ``base`` and ``now`` (two snapshots of one cache; gauges are ``now``'s): what a
    forked child did itself, without what it inherited."""
    before = {f.name: dict(f.samples) for f in base}
    out = []
    for family in now:
        old = before.get(family.name, {})
        fresh = Family(family.name, family.kind, family.help, family.labels)
        for labels, value in family.samples:
            if family.kind == "gauge" or labels not in old:
                fresh.samples.append((labels, value))
            elif family.kind == "histogram":
                (buckets, total), (old_buckets, old_total) = value, old[labels]
                diff = [(bound, x - y) for (bound, x), (_, y) in zip(buckets, old_buckets, strict=True)]
                fresh.samples.append((labels, (diff, total - old_total)))
            else:
                fresh.samples.append((labels, value - old[labels]))
        out.append(fresh)
    return out


def _add(family: Family, a: Any, b: Any) -> Any:
    if family.kind == "histogram":
        (buckets_a, sum_a), (buckets_b, sum_b) = a, b
        summed = [(bound, x + y) for (bound, x), (_, y) in zip(buckets_a, buckets_b, strict=True)]
        return summed, sum_a + sum_b
    if family.name == "cachewise_breaker_state":
        return max(a, b)
    return a + b


def _scopes(stats: CacheStats) -> list[tuple[str, Counters]]:
    """Each cached function's counters, and the rest of the namespace's (the totals minus every function's) as
    :data:`DIRECT`: summed over ``function``, a counter is the namespace's total."""
    functions = sorted(stats.functions.items())
    direct = Counters()
    for f in fields(Counters):
        total = getattr(stats.total, f.name)
        setattr(direct, f.name, total - sum(getattr(c, f.name) for _, c in functions))
    return [(DIRECT, direct), *functions]
