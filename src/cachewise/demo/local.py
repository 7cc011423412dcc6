"""Story 12: the seed's §4 comparison made real — ``functools.lru_cache``, a server hit and a local-tier hit of the
same product page, then writes made by another process and how long until this one sees each of them."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from rich.console import Console

from ..cache import Cache
from ..local import LocalCache
from ..local.delivery import measure_delivery, quantile_ms
from .app import PRODUCT_TTL, ProductPages
from .tables import TITLES, format_ms, new_table
from .timing import Timings, time_calls

__all__ = ["LocalResult", "local_tier"]


@dataclass(frozen=True)
class LocalResult:
    """What story 12 measured: hit times of each tier, and the delays of writes made by another process."""

    lru: Timings
    server_hit: Timings
    local_hit: Timings
    #: Seconds from the other process's write to this process reading the new value, one per write.
    delays: tuple[float, ...]
    writes: int
    local_hits: int

    def delay_ms(self, quantile: float) -> float:
        return quantile_ms(self.delays, quantile)


def local_tier(
    console: Console, cache: Cache, pages: ProductPages, product_id: int, hits: int, writes: int = 50
) -> LocalResult:
    """Time the three kinds of hit, then watch another process's writes arrive through the local tier."""
    namespace = f"{cache.namespace}-local"
    url = cache.connection.target
    lru = functools.lru_cache(maxsize=1024)(pages.load)
    lru(product_id)
    with Cache(url, namespace=namespace, local=LocalCache()) as tiered:
        deadline = time.monotonic() + 5
        while not _coherent(tiered) and time.monotonic() < deadline:
            time.sleep(0.01)

        @tiered.cached(ttl=PRODUCT_TTL, key="product:{product_id}", local=False)
        def from_server(product_id: int) -> object:
            return pages.load(product_id)

        @tiered.cached(ttl=PRODUCT_TTL, key="product:{product_id}")
        def from_memory(product_id: int) -> object:
            return pages.load(product_id)

        from_server(product_id)
        from_memory(product_id)  # the server's entry, now kept in this process too
        lru_t = time_calls(lambda: lru(product_id), hits)
        server_t = time_calls(lambda: from_server(product_id), hits)
        local_t = time_calls(lambda: from_memory(product_id), hits)
        delays = measure_delivery(tiered, writes)
        local_hits = tiered.stats().total.local_hits
        tiered.clear()

    table = new_table(TITLES[11], "one product page, read again", "median", "p95", "sees another process's writes")
    table.add_row(
        "functools.lru_cache (this process only)", format_ms(lru_t.median_ms), format_ms(lru_t.p95_ms), "never"
    )
    table.add_row(
        "server hit (@cached, local=False)", format_ms(server_t.median_ms), format_ms(server_t.p95_ms), "at once"
    )
    table.add_row(
        "local-tier hit (Cache(local=True))", format_ms(local_t.median_ms), format_ms(local_t.p95_ms), "when told"
    )
    console.print(table)
    result = LocalResult(lru_t, server_t, local_t, tuple(delays), writes, local_hits)
    if delays:
        console.print(
            f"another process wrote a key {writes} times; this one, reading it from its local tier every 0.2 ms, saw "
            f"{len(delays)} new values, {format_ms(result.delay_ms(0.5))} (median) and "
            f"{format_ms(result.delay_ms(0.99))} (p99) after each write began (the write's own round trip, then the "
            "server's invalidation)",
            style="dim",
        )
    return result


def _coherent(cache: Cache) -> bool:
    local = cache.stats().local
    return local is not None and local.coherent
