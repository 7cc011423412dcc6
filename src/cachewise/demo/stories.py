"""The seed guide's stories, told against a real server and a real database, with measured numbers.

Each story runs real calls, prints one rich table, and returns what it measured.  Nothing sleeps to look slow:
the one wait (story 3) is the TTL running out, which is what that story is about.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console

from ..cache import Cache
from ..ttl import until_next
from .app import PRODUCT_TTL, ProductPages
from .tables import TITLES, format_ms, new_table
from .timing import Timings, time_calls, time_once

__all__ = [
    "BurstResult",
    "InvalidationResult",
    "SpeedResult",
    "TTLResult",
    "WriteResult",
    "database_vs_cache",
    "many_requests",
    "ttl_expiry",
    "version_and_tags",
    "writes_and_invalidation",
]

SHORT_TTL = 1.0
#: Longer than SHORT_TTL, so the entry has certainly expired on the server.
TTL_WAIT = 1.2
JITTER = 0.1
JITTER_KEYS = 10


# -- 1 ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedResult:
    product_id: int
    db: Timings
    hit: Timings

    @property
    def speedup(self) -> float:
        return self.db.median_ms / self.hit.median_ms


def database_vs_cache(
    console: Console, pages: ProductPages, product_id: int, db_samples: int, hits: int
) -> SpeedResult:
    """The product page query straight from SQLite vs a cache hit of the same page."""
    pages.load(product_id)  # warm both paths alike: SQLite's page cache, and the cached entry (one miss)
    pages.get_product(product_id)
    db = time_calls(lambda: pages.load(product_id), db_samples)
    hit = time_calls(lambda: pages.get_product(product_id), hits)
    if pages.get_product(product_id) != pages.load(product_id):
        raise RuntimeError("the cache served something other than what the database says")
    result = SpeedResult(product_id, db, hit)
    table = new_table(TITLES[0], f"product page {product_id}", "calls", "median", "p95")
    table.add_row("SQLite query", str(db.count), format_ms(db.median_ms), format_ms(db.p95_ms))
    table.add_row("cache hit (@cache.cached)", str(hit.count), format_ms(hit.median_ms), format_ms(hit.p95_ms))
    table.caption = (
        f"a hit is {result.speedup:,.0f}x faster (medians); the query: the product, its sales and its revenue "
        "rank in its category"
    )
    console.print(table)
    return result


# -- 2 ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BurstResult:
    requests: int
    cached_db_queries: int
    cached_ms: float
    uncached_db_queries: int
    uncached_ms: float


def many_requests(console: Console, pages: ProductPages, product_id: int, requests: int) -> BurstResult:
    """The seed's §0: many users ask for the same thing; without a cache the database answers every time."""
    before = pages.db_reads
    cached_ms = time_once(lambda: [pages.get_product(product_id) for _ in range(requests)])
    cached_queries = pages.db_reads - before
    before = pages.db_reads
    uncached_ms = time_once(lambda: [pages.load(product_id) for _ in range(requests)])
    result = BurstResult(requests, cached_queries, cached_ms, pages.db_reads - before, uncached_ms)
    table = new_table(TITLES[1], f"{requests} requests for product {product_id}", "DB queries", "total", "per request")
    for label, queries, total in (
        ("without the cache", result.uncached_db_queries, uncached_ms),
        ("with the cache", cached_queries, cached_ms),
    ):
        table.add_row(label, str(queries), format_ms(total), format_ms(total / requests))
    table.caption = (
        f"{uncached_ms / cached_ms:,.0f}x less time, {result.uncached_db_queries - cached_queries} queries saved "
        "(requests one after another, as from one worker)"
    )
    console.print(table)
    return result


# -- 3 ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TTLResult:
    loads_before_expiry: int
    loads_after_expiry: int
    short_pttl_ms: int
    product_pttl_ms: int
    until_next_hour_s: float
    hourly_pttl_ms: int
    jitter_min_ms: int
    jitter_max_ms: int


def ttl_ms(cache: Cache, key: str) -> int:
    """The key's remaining TTL on the server, in ms (-1 when it is gone)."""
    left = cache.ttl(key)
    return -1 if left is None else round(left * 1000)


def ttl_expiry(console: Console, pages: ProductPages, product_id: int) -> TTLResult:
    """The seed's §5: every entry expires.  A short TTL runs out; an hourly refresh expires at the full hour."""
    cache = pages.cache
    key = f"stock:{product_id}"

    def read() -> int:
        before = pages.db_reads
        cache.get_or_set(key, lambda: pages.load(product_id), ttl=SHORT_TTL)
        return pages.db_reads - before

    first, second = read(), read()
    short_pttl = ttl_ms(cache, key)
    started = time.perf_counter()
    time.sleep(TTL_WAIT)  # the story: wait for the TTL to run out (not a simulated cost)
    waited = time.perf_counter() - started
    third = read()
    page_queries = pages.db_reads
    pages.get_product(product_id)
    page_queries = pages.db_reads - page_queries
    product_pttl = ttl_ms(cache, pages.get_product.key_for(product_id))

    hourly = until_next(hours=1)
    seconds = hourly.seconds_left()
    cache.set("dashboard:sales-by-hour", {"rows": []}, ttl=hourly)
    hourly_pttl = ttl_ms(cache, "dashboard:sales-by-hour")

    jitter_keys = [f"jitter:{i}" for i in range(JITTER_KEYS)]
    for i, name in enumerate(jitter_keys):
        cache.set(name, i, ttl=60, jitter=JITTER)
    spread = [ttl_ms(cache, name) for name in jitter_keys]

    result = TTLResult(
        loads_before_expiry=first + second,
        loads_after_expiry=third,
        short_pttl_ms=short_pttl,
        product_pttl_ms=product_pttl,
        until_next_hour_s=seconds,
        hourly_pttl_ms=hourly_pttl,
        jitter_min_ms=min(spread),
        jitter_max_ms=max(spread),
    )
    table = new_table(TITLES[3], "step", "DB queries", "PTTL on the server")
    table.add_row(f"read {key} (ttl={SHORT_TTL:g} s): miss", str(first), "")
    table.add_row("read again: hit", str(second), f"{short_pttl:,} ms")
    table.add_row(f"[italic]wait {waited:.2f} s: the TTL runs out[/]", "", "")
    table.add_row("read again: expired, loader runs", str(third), "")
    table.add_row(f"read product:{product_id} (ttl={PRODUCT_TTL} s)", str(page_queries), f"{product_pttl:,} ms")
    table.add_row(f"ttl=until_next(hours=1): {seconds:,.0f} s", "", f"{hourly_pttl:,} ms")
    table.add_row(f"ttl=60, jitter={JITTER:g}, {JITTER_KEYS} keys", "", f"{min(spread):,} .. {max(spread):,} ms")
    table.caption = (
        "the wait is the story (nothing else sleeps). Every write has a TTL; hourly data expires at the next "
        "refresh, not 24 h later; jitter keeps keys written together from expiring together"
    )
    console.print(table)
    return result


# -- 4 ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WriteResult:
    stale_price_served: bool
    write_through_read_queries: int
    write_through_price_ok: bool
    delete_on_write_read_queries: int
    delete_on_write_price_ok: bool


def writes_and_invalidation(console: Console, pages: ProductPages, product_id: int) -> WriteResult:
    """The seed's §2: the database changes; what does the next read serve?"""
    table = new_table(TITLES[4], "write, then one read", "price in DB", "served", "DB queries")

    def read(label: str, price_in_db: float) -> tuple[float, int]:
        before = pages.db_reads
        served = pages.get_product(product_id)["price"]
        queries = pages.db_reads - before
        mark = "" if served == price_in_db else " [red](stale)[/]"
        table.add_row(label, f"{price_in_db:.2f}", f"{served:.2f}{mark}", str(queries))
        return served, queries

    original = pages.get_product(product_id)["price"]
    table.add_row(f"product {product_id} cached", f"{original:.2f}", f"{original:.2f}", "")

    naive = round(original * 1.05, 2)
    pages.set_price_db_only(product_id, naive)
    stale, _ = read("UPDATE only (cache not told)", naive)

    through = round(original * 1.10, 2)
    pages.set_price_write_through(product_id, through)
    through_served, through_queries = read("write-through: UPDATE, cache.set", through)

    deleted = round(original * 0.90, 2)
    pages.set_price_delete_on_write(product_id, deleted)
    deleted_served, deleted_queries = read("delete-on-write: UPDATE, DEL", deleted)
    read("(no write) read again", deleted)

    table.caption = (
        "the database rules: after a write, write the new value to the cache (write-through) or delete the copy "
        "(delete-on-write); otherwise the cache serves the old price until its TTL ends"
    )
    console.print(table)
    return WriteResult(
        stale_price_served=stale != naive,
        write_through_read_queries=through_queries,
        write_through_price_ok=through_served == through,
        delete_on_write_read_queries=deleted_queries,
        delete_on_write_price_ok=deleted_served == deleted,
    )


# -- 5 ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvalidationResult:
    products: int
    warm_loads: int
    bump_ms: float
    bump_loads: int
    tags_ms: float
    tags_loads: int


def version_and_tags(console: Console, pages: ProductPages, product_ids: list[int]) -> InvalidationResult:
    """Invalidate every cached product at once: one counter bump, however many keys; no SCAN, no key list."""
    cache = pages.cache

    def read_all() -> int:
        before = pages.db_reads
        for pid in product_ids:
            pages.get_product(pid)
        return pages.db_reads - before

    read_all()
    warm = read_all()
    bump_ms = time_once(lambda: cache.bump_version("product"))
    bump_loads = read_all()
    tags_ms = time_once(lambda: cache.invalidate_tags("products"))
    tags_loads = read_all()
    result = InvalidationResult(len(product_ids), warm, bump_ms, bump_loads, tags_ms, tags_loads)

    n = len(product_ids)
    table = new_table(TITLES[5], f"action, then re-read {n} products", "server calls", "time", "DB queries")
    table.add_row("none (all cached)", "", "", str(warm))
    table.add_row("cache.bump_version('product')", "1", format_ms(bump_ms), str(bump_loads))
    table.add_row("cache.invalidate_tags('products')", "1", format_ms(tags_ms), str(tags_loads))
    table.caption = (
        f"every one of the {n} cached products became a miss at once: one INCR in one script call, "
        "however many keys; no SCAN, no DEL, no list of keys"
    )
    console.print(table)
    return result
