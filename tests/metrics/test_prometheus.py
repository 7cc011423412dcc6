"""A real Prometheus exporter scraped over HTTP after a scripted mix of hits, misses, stale serves, lease waits,
breaker trips and rate-limit refusals: every counter has exactly the expected value; then the same with two worker
processes in multi-process mode."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

prometheus_client = pytest.importorskip("prometheus_client")  # the [metrics] extra; in the test extra
from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cachewise import Cache, RateLimiter  # noqa: E402
from cachewise.metrics import DIRECT, MultiProcessCollector, instrument  # noqa: E402
from cachewise.server.cluster import free_port  # noqa: E402
from cachewise.server.embedded import EmbeddedServer  # noqa: E402


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an HTTP scrape: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return parse(text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def mix(url: str, namespace: str) -> dict[str, Any]:
    """The scripted mix on two caches of one namespace (one of them waits for the other's lease); what each step
    must count."""
    a = Cache(url, namespace=namespace)
    b = Cache(url, namespace=namespace)
    try:
        a.set("a", 1, ttl=60)
        for _ in range(3):
            assert a.get("a") == 1  # 3 hits
        for _ in range(2):
            assert a.get("nope") is None  # 2 misses

        @a.cached(ttl=60, key="p:{n}")
        def product(n: int) -> int:
            return n * 10

        for _ in range(3):
            assert product(4) == 40  # 1 miss (a leased load), then 2 hits

        started, release = threading.Event(), threading.Event()

        def slow() -> str:
            started.set()
            assert release.wait(10)
            return "slow"

        first = threading.Thread(target=lambda: a.get_or_set("slow", slow, ttl=60))
        first.start()
        assert started.wait(10)
        got: list[Any] = []
        second = threading.Thread(target=lambda: got.append(b.get_or_set("slow", lambda: "not me", ttl=60)))
        second.start()
        deadline = time.monotonic() + 10
        while b.stats().total.misses < 1 and time.monotonic() < deadline:  # b read the cold key, now waits
            time.sleep(0.01)
        time.sleep(0.1)
        release.set()
        first.join(10)
        second.join(10)
        assert got == ["slow"]  # b waited for a's load: 1 lease wait

        async def stale() -> None:
            loads = [0]

            async def load() -> int:
                loads[0] += 1
                return loads[0]

            assert await a.aget_or_set("dash", load, ttl=0.2, stale_ttl=30, early_refresh=0) == 1
            await asyncio.sleep(0.35)  # past its TTL, within its grace
            assert await a.aget_or_set("dash", load, ttl=60, stale_ttl=30, early_refresh=0) == 1  # 1 stale serve
            deadline = time.monotonic() + 10
            while loads[0] < 2 and time.monotonic() < deadline:  # the background refresh
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)

        asyncio.run(stale())
        limiter = RateLimiter(a, limit=3, period=60, name="login")
        decisions = [limiter.hit("user-1").allowed for _ in range(5)]
        assert decisions == [True, True, True, False, False]
        return {"a": a, "b": b}
    except BaseException:
        a.close()
        b.close()
        raise


def test_http_scrape_after_a_scripted_mix_shows_exact_counts(server_url: str, unique_namespace: str) -> None:
    registry = CollectorRegistry()
    port = free_port()
    http, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    caches = []
    down = EmbeddedServer().start()
    broken = Cache(down.url, namespace=f"{unique_namespace}-down")
    try:
        made = mix(server_url, unique_namespace)
        caches = [made["a"], made["b"]]
        metrics = [instrument(c, registry) for c in (*caches, broken)]
        assert broken.get("x") is None  # a miss on a live server
        down.stop()
        for _ in range(8):  # the server is gone: 5 failures open the breaker, the rest skip it
            assert broken.get("x") is None
        s = scrape(port)
        ns, fn = unique_namespace, f"{__name__}.mix.<locals>.product"
        req = "cachewise_requests_total"
        assert value(s, req, namespace=ns, function=fn, result="hit") == 2
        assert value(s, req, namespace=ns, function=fn, result="miss") == 1
        assert value(s, req, namespace=ns, function=DIRECT, result="stale") == 1
        assert value(s, req, namespace=ns, function=DIRECT, result="local_hit") == 0
        assert value(s, "cachewise_lease_waits_total", namespace=ns, function=DIRECT) == 1
        assert value(s, "cachewise_loads_total", namespace=ns, function=fn) == 1
        assert value(s, "cachewise_lease_loads_total", namespace=ns, function=fn) == 1
        assert value(s, "cachewise_ratelimit_decisions_total", namespace=ns, limit="login", allowed="true") == 3
        assert value(s, "cachewise_ratelimit_decisions_total", namespace=ns, limit="login", allowed="false") == 2
        dns = f"{unique_namespace}-down"
        assert value(s, "cachewise_breaker_opens_total", namespace=dns) == 1
        assert value(s, "cachewise_breaker_state", namespace=dns) == 2  # open
        # Every exported counter is what the caches counted (a and b summed: one namespace).
        totals = [c.stats().total for c in caches]
        direct_hits = sum(t.hits - t.local_hits - t.stale_served for t in totals) - 2  # minus product's
        assert value(s, req, namespace=ns, function=DIRECT, result="hit") == direct_hits == 3  # a.get("a") x 3
        assert value(s, req, namespace=ns, function=DIRECT, result="miss") == sum(t.misses for t in totals) - 1
        down_total = broken.stats().total
        assert value(s, "cachewise_errors_total", namespace=dns, function=DIRECT) == down_total.errors >= 1
        assert value(s, "cachewise_skipped_total", namespace=dns, function=DIRECT) == down_total.skipped >= 1
        commands = value(s, "cachewise_command_duration_seconds_count", namespace=ns, function=DIRECT)
        assert commands > 0 and value(s, "cachewise_command_duration_seconds_sum", namespace=ns, function=DIRECT) > 0
        for m in metrics:
            m.close()
        assert not [k for k in scrape(port) if k[0].startswith("cachewise_")]  # unregistered
    finally:
        for c in (*caches, broken):
            c.close()
        down.stop()
        http.shutdown()


_WORKER = r"""
import sys
from cachewise import Cache, RateLimiter
from cachewise.metrics import instrument
url, namespace = sys.argv[1], sys.argv[2]
cache = Cache(url, namespace=namespace)
instrument(cache, interval=60)  # the exit writes the file: no scrape may come before it here
for _ in range(4):
    got = cache.get("k")
    assert got == 1, (got, cache.stats())
assert cache.get("none") is None
limiter = RateLimiter(cache, limit=2, period=60, name="api")
assert [limiter.hit(sys.argv[3]).allowed for _ in range(3)] == [True, True, False]
"""


def test_two_worker_processes_in_multiprocess_mode(server_url: str, unique_namespace: str, tmp_path: Path) -> None:
    env = {**__import__("os").environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with Cache(server_url, namespace=unique_namespace) as seeder:  # written before: the workers only read it
        assert seeder.set("k", 1, ttl=60)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, server_url, unique_namespace, f"user-{i}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outcomes = [(w.wait(60), w.communicate()[1]) for w in workers]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert len(list(tmp_path.glob("cachewise-*.json"))) == 2  # one file per process
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    s = parse(prometheus_client.generate_latest(registry).decode())
    ns, req = unique_namespace, "cachewise_requests_total"
    assert value(s, req, namespace=ns, function=DIRECT, result="hit") == 8
    assert value(s, req, namespace=ns, function=DIRECT, result="miss") == 2
    assert value(s, "cachewise_sets_total", namespace=ns, function=DIRECT) == 0
    assert value(s, "cachewise_ratelimit_decisions_total", namespace=ns, limit="api", allowed="true") == 4
    assert value(s, "cachewise_ratelimit_decisions_total", namespace=ns, limit="api", allowed="false") == 2
