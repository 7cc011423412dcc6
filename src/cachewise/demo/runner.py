"""``run_demo``: build the shop database, tell every story against one cache, check the keys, clean up."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from ..cache import Cache
from ..errors import CachewiseError
from ..failures import SERVER_ERRORS
from ..stats import CacheStats
from .app import ProductPages
from .data import DataSizes, open_database, product_ids, remove_database
from .data_stories import DashboardResult, FeatureResult, dashboard, feature_store
from .local import LocalResult, local_tier
from .namespace import TTLAudit, audit_ttls
from .outage import OutageResult, server_outage
from .stampede import StampedeResult, cold_stampede
from .stories import (
    BurstResult,
    InvalidationResult,
    SpeedResult,
    TTLResult,
    WriteResult,
    database_vs_cache,
    many_requests,
    ttl_expiry,
    version_and_tags,
    writes_and_invalidation,
)
from .summary import show_audit, show_stats
from .web import RateLimitResult, SessionResult, rate_limiting, sessions

__all__ = ["DemoError", "DemoResult", "DemoSizes", "run_demo"]


class DemoError(RuntimeError):
    """The demo cannot run: the server is unreachable, or ``--db`` names a file the demo must not touch."""


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo is: rows generated, and how many calls each story makes."""

    products: int = 20_000
    users: int = 20_000
    purchases: int = 100_000
    #: Story 2: requests for one product, with and without the cache.
    requests: int = 1000
    #: Story 1: timed database queries, and timed cache hits.
    db_samples: int = 30
    hit_samples: int = 1000
    #: Story 6: products cached, then invalidated all at once.
    versioned: int = 50
    #: Story 7: page reads in each phase of the outage.
    outage_calls: int = 200
    seed: int = 42

    @classmethod
    def quick(cls) -> DemoSizes:
        """Tiny sizes for tests: a few seconds, same stories (the query still scans a few thousand rows)."""
        return cls(
            products=400, users=200, purchases=40_000, db_samples=10, hit_samples=200, versioned=20, outage_calls=50
        )

    @property
    def data(self) -> DataSizes:
        return DataSizes(self.products, self.users, self.purchases, self.seed)


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo measured."""

    url: str
    namespace: str
    sizes: DemoSizes
    data_seconds: float
    speed: SpeedResult
    burst: BurstResult
    stampede: StampedeResult
    ttl: TTLResult
    writes: WriteResult
    invalidation: InvalidationResult
    outage: OutageResult
    rate_limit: RateLimitResult
    sessions: SessionResult
    features: FeatureResult
    dashboard: DashboardResult
    local: LocalResult
    stats: CacheStats
    audit: TTLAudit
    #: Keys removed from a server that outlives the demo (0 for the private embedded server, which just stops).
    keys_deleted: int
    seconds: float = field(default=0.0)

    @property
    def db_ms(self) -> float:
        """Median time of the product page query straight from SQLite."""
        return self.speed.db.median_ms

    @property
    def hit_ms(self) -> float:
        """Median time of a cache hit of the same page."""
        return self.speed.hit.median_ms

    @property
    def db_queries_for_1000(self) -> int:
        """Database queries run by the cached function for ``sizes.requests`` (1000) requests of one product."""
        return self.burst.cached_db_queries

    @property
    def keys_without_ttl(self) -> int:
        return len(self.audit.without_ttl)


def _intro(console: Console, cache: Cache, db_path: Path, sizes: DemoSizes) -> None:
    console.print(
        Panel.fit(
            f"server     {cache.url}{_served_by(cache)}\n"
            f"namespace  {cache.namespace}\n"
            f"database   {db_path} (SQLite: the source of truth)\n"
            f"rows       {sizes.products:,} products, {sizes.users:,} users, {sizes.purchases:,} purchases",
            title="cachewise demo",
            subtitle="every number below is measured",
        )
    )


def _served_by(cache: Cache) -> str:
    server = cache.connection.server
    return "" if server is None else f" (valkey-server on {server.url})"


def _outlives_us(cache: Cache) -> bool:
    """True unless the server is the private embedded one, which stops (with every key) when the cache closes."""
    address = cache.connection.address
    return not (address.embedded and address.directory is None)


def run_demo(
    url: str | None = None,
    namespace: str = "cachewise-demo",
    sizes: DemoSizes | None = None,
    console: Console | None = None,
    db_path: Path | None = None,
) -> DemoResult:
    """Run every story; ``url`` None means ``CACHEWISE_URL``, else the embedded server.

    ``db_path`` keeps the SQLite database there (reused when it already holds the same data); by default a
    temporary file is used and removed.  On a server that outlives the demo, every key of ``namespace`` is deleted
    at the start and at the end; nothing outside it is touched.
    """
    sizes = sizes or DemoSizes()
    console = console or Console()
    started = time.perf_counter()
    temporary = db_path is None
    if db_path is None:
        fd, name = tempfile.mkstemp(prefix="cachewise-demo-", suffix=".sqlite")
        os.close(fd)
        db_path = Path(name)
    cache: Cache | None = None
    db = None
    outlives = False
    try:
        try:
            cache = Cache(url, namespace=namespace)
        except CachewiseError as exc:  # a bad URL or namespace, no server binary, a server that did not start
            raise DemoError(str(exc)) from exc
        try:
            cache.connection.sync.ping()
        except SERVER_ERRORS as exc:
            raise DemoError(f"cannot reach the cache server {cache.url}: {exc}") from exc
        outlives = _outlives_us(cache)
        if outlives:
            cache.clear()  # leftovers of an interrupted run would make the first reads hits
        _intro(console, cache, db_path, sizes)
        data_started = time.perf_counter()
        try:
            db, generated = open_database(db_path, sizes.data, console)
        except (FileExistsError, sqlite3.DatabaseError) as exc:
            raise DemoError(f"cannot use {db_path} as the demo database: {exc}") from exc
        data_seconds = time.perf_counter() - data_started
        if not generated:
            console.print(f"reused {db_path}: it already holds this data (prices as the last run left them)")
        pages = ProductPages(cache, db)
        ids = product_ids(db, max(sizes.versioned, 4))

        speed = database_vs_cache(console, pages, ids[0], sizes.db_samples, sizes.hit_samples)
        burst = many_requests(console, pages, ids[1], sizes.requests)
        stampede = cold_stampede(console, cache, str(db_path), ids[1], sizes.requests)
        ttl = ttl_expiry(console, pages, ids[2])
        writes = writes_and_invalidation(console, pages, ids[3])
        invalidation = version_and_tags(console, pages, ids[: sizes.versioned])
        outage = server_outage(console, db, ids[:10], sizes.outage_calls)
        rate_limit = rate_limiting(console, cache)
        session_story = sessions(console, cache)
        features = feature_store(console, cache, db_path)
        board = dashboard(console, cache, db_path)
        local = local_tier(console, cache, pages, ids[0], sizes.hit_samples)

        stats = cache.stats()
        show_stats(console, stats)
        audit = audit_ttls(cache)
        show_audit(console, audit, cache.keyspace.pattern)
        deleted = cache.clear() if outlives else 0
        if outlives:
            console.print(f"deleted the demo's {deleted:,} keys under {cache.keyspace.pattern!r}")
        return DemoResult(
            url=cache.url,
            namespace=namespace,
            sizes=sizes,
            data_seconds=data_seconds,
            speed=speed,
            burst=burst,
            stampede=stampede,
            ttl=ttl,
            writes=writes,
            invalidation=invalidation,
            outage=outage,
            rate_limit=rate_limit,
            sessions=session_story,
            features=features,
            dashboard=board,
            local=local,
            stats=stats,
            audit=audit,
            keys_deleted=deleted,
            seconds=time.perf_counter() - started,
        )
    except BaseException:
        if cache is not None and outlives:
            with contextlib.suppress(Exception):  # keys have TTLs anyway; the next run deletes them too
                cache.clear()
        raise
    finally:
        if db is not None:
            db.close()
        if cache is not None:
            cache.close()
        if temporary:
            remove_database(db_path)
