"""The golden rule, live: the cache server goes down in the middle of the run and the application keeps answering.

The story runs on an embedded server of its own (never the server the rest of the demo uses, which may be shared):
product pages are read through the cache; then the server is stopped, and the same reads go to the database (the
circuit breaker opens after a few failures, so they stop paying timeouts); then the server is started again on the
same socket and hits resume.  Every answer is checked against the database.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass

from rich.console import Console

from ..cache import Cache
from ..server.embedded import EmbeddedServer
from .data import Product, fetch_product
from .tables import TITLES, format_ms, new_table
from .timing import Timings

__all__ = ["OutagePhase", "OutageResult", "server_outage"]


@dataclass(frozen=True)
class OutagePhase:
    name: str
    timings: Timings
    db_queries: int
    errors: int
    skipped: int
    wrong_answers: int
    breaker: str


@dataclass(frozen=True)
class OutageResult:
    phases: tuple[OutagePhase, ...]
    breaker_opens: int

    @property
    def wrong_answers(self) -> int:
        return sum(p.wrong_answers for p in self.phases)


def server_outage(console: Console, db: sqlite3.Connection, product_ids: list[int], calls: int) -> OutageResult:
    """Read ``calls`` product pages before, during and after an outage of the cache server."""
    directory = tempfile.mkdtemp(prefix="cw-outage-")
    server = EmbeddedServer(directory).start()
    truth = {pid: fetch_product(db, pid) for pid in product_ids}
    queries = [0]
    try:
        cache = Cache(f"unix://{server.socket_path}", namespace="outage", timeout=1.0, connect_timeout=1.0)

        @cache.cached(ttl=300, key="product:{product_id}")
        def product(product_id: int) -> Product | None:
            queries[0] += 1
            return fetch_product(db, product_id)

        phases = []

        def phase(name: str) -> None:
            before, counters = queries[0], cache.stats().total
            samples, wrong = [], 0
            for i in range(calls):
                pid = product_ids[i % len(product_ids)]
                started = time.perf_counter()
                answer = product(pid)
                samples.append(time.perf_counter() - started)
                wrong += answer != truth[pid]
            after = cache.stats()
            phases.append(
                OutagePhase(
                    name,
                    Timings(tuple(samples)),
                    queries[0] - before,
                    after.total.errors - counters.errors,
                    after.total.skipped - counters.skipped,
                    wrong,
                    after.breaker,
                )
            )

        for pid in product_ids:  # warm: every page cached
            product(pid)
        phase("server up (all hits)")
        server.stop()
        phase("server stopped")
        server = EmbeddedServer(directory).start()
        time.sleep(cache.connection.options.breaker_reset)  # the breaker's pause: then one call probes the server
        product(product_ids[0])
        phase("server back (empty, refilling)")
        phase("server back (hits again)")
        result = OutageResult(tuple(phases), cache.stats().breaker_opens)
        cache.close()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    table = new_table(
        TITLES[6], f"{calls} page reads per phase", "median", "p99", "DB queries", "errors", "skipped", "breaker"
    )
    for p in result.phases:
        p99 = sorted(p.timings.samples)[max(0, round(0.99 * p.timings.count) - 1)] * 1000
        table.add_row(
            p.name, format_ms(p.timings.median_ms), format_ms(p99), f"{p.db_queries:,}", str(p.errors),
            f"{p.skipped:,}", p.breaker,
        )  # fmt: skip
    table.caption = (
        f"{result.wrong_answers} wrong answers and no exception: the database rules. The breaker opened "
        f"{result.breaker_opens} time(s), so reads during the outage skip the dead server instead of each paying "
        "a timeout; after the restart one probe closes it and the cache refills"
    )
    console.print(table)
    return result
