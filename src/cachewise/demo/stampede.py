"""The seed's opening question, for real: many users ask for the same cold product at the same moment.

Without stampede protection every one of them misses and runs the query (cache-aside only helps once the key is
warm); with it, one caller takes the key's lease and queries, the others wait to be told and read its value.  The
requests are asyncio tasks against the same cache; each query runs in a worker thread on its own SQLite
connection, as a web server's would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass

from rich.console import Console

from ..cache import Cache
from .data import Product, fetch_product
from .tables import TITLES, format_ms, new_table

__all__ = ["StampedeResult", "cold_stampede"]


@dataclass(frozen=True)
class StampedeResult:
    requests: int
    protected_queries: int
    protected_ms: float
    naive_queries: int
    naive_ms: float
    #: Requests that waited for the one load (instead of querying) in the protected run.
    waiters: int


class _Origin:
    """The product query, run in worker threads on per-thread SQLite connections, counted."""

    def __init__(self, db_path: str, product_id: int) -> None:
        self.db_path = db_path
        self.product_id = product_id
        self.queries = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []

    def query(self) -> Product:
        with self._lock:
            self.queries += 1
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.db_path, check_same_thread=False)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        product = fetch_product(db, self.product_id)
        if product is None:
            raise LookupError(f"no product {self.product_id}")
        return product

    def close(self) -> None:
        for db in self._connections:
            db.close()


async def _burst(cache: Cache, origin: _Origin, key: str, requests: int, single_flight: bool) -> float:
    async def load() -> Product:
        return await asyncio.to_thread(origin.query)

    started = time.perf_counter()
    results: list[Product] = await asyncio.gather(
        *(cache.aget_or_set(key, load, ttl=300, single_flight=single_flight) for _ in range(requests))
    )
    elapsed = (time.perf_counter() - started) * 1000
    assert all(r == results[0] for r in results), "every request must get the same product"
    return elapsed


def cold_stampede(console: Console, cache: Cache, db_path: str, product_id: int, requests: int) -> StampedeResult:
    """``requests`` concurrent requests for one cold product, without and with stampede protection."""

    async def both() -> StampedeResult:
        naive_origin, protected_origin = _Origin(db_path, product_id), _Origin(db_path, product_id)
        try:
            naive_ms = await _burst(cache, naive_origin, f"cold:naive:{product_id}", requests, single_flight=False)
            waits_before = cache.stats().total.waits
            protected_ms = await _burst(
                cache, protected_origin, f"cold:protected:{product_id}", requests, single_flight=True
            )
            waiters = cache.stats().total.waits - waits_before
        finally:
            naive_origin.close()
            protected_origin.close()
            await cache.connection.aclose_loop()
        return StampedeResult(requests, protected_origin.queries, protected_ms, naive_origin.queries, naive_ms, waiters)

    result = asyncio.run(both())
    table = new_table(TITLES[2], f"{requests} requests at once, one cold product", "DB queries", "until all answered")
    table.add_row("cache-aside, no protection", f"{result.naive_queries:,}", format_ms(result.naive_ms))
    table.add_row("cache-aside with leases (default)", f"{result.protected_queries:,}", format_ms(result.protected_ms))
    table.caption = (
        f"with leases one request queries and {result.waiters:,} wait to be told (pub/sub), across threads, "
        "tasks and processes; without them every request that arrives before the first answer queries"
    )
    console.print(table)
    return result
