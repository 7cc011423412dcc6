"""The seed's data stories: an ML feature store, and a dashboard query that 50 viewers open at once.

Features: the hourly batch job (``avg(amount) AS avg_ticket ... GROUP BY user_id``) writes one hash per user; the
prediction API reads one user, or a thousand in one round trip.  Dashboard: "50 users × 3 s = 150 s of database
time; with the cache ≈ 3 s" — measured here on the demo's own aggregation, the viewers arriving together.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..cache import Cache
from ..features import FeatureStore
from ..query import QueryCache
from .tables import TITLES, format_ms, new_table

__all__ = ["DashboardResult", "FeatureResult", "dashboard", "feature_store"]

FEATURES_SQL = (
    "SELECT user_id, avg(amount) AS avg_ticket, count(*) AS purchases, max(purchased_at) AS last_purchase "
    "FROM purchases GROUP BY user_id"
)
DASHBOARD_SQL = """
    SELECT u.country, count(*) AS orders, sum(p.amount) AS revenue, avg(p.amount) AS avg_ticket
    FROM purchases AS p JOIN users AS u ON u.id = p.user_id   -- revenue by region, the seed's dashboard
    GROUP BY u.country ORDER BY revenue DESC
"""


@dataclass(frozen=True)
class FeatureResult:
    entities: int
    rows_per_second: float
    get_p50_ms: float
    get_p99_ms: float
    get_many_ms: float
    freshness_s: float | None


def feature_store(console: Console, cache: Cache, db_path: Path) -> FeatureResult:
    """Materialise per-user features from SQL, then read them as a prediction API would."""
    import sqlalchemy

    store = FeatureStore(cache, entity="user", ttl=7200)
    engine = sqlalchemy.create_engine(f"sqlite:///{db_path}")
    try:
        summary = store.materialize_sql(engine, FEATURES_SQL)
        ids = [row[0] for row in engine.connect().execute(sqlalchemy.text("SELECT DISTINCT user_id FROM purchases"))]
    finally:
        engine.dispose()
    rng = random.Random(7)
    samples = []
    for user in rng.choices(ids, k=1000):
        started = time.perf_counter()
        store.get(user)
        samples.append((time.perf_counter() - started) * 1000)
    batch = rng.sample(ids, min(1000, len(ids)))
    started = time.perf_counter()
    found = store.get_many(batch)
    many_ms = (time.perf_counter() - started) * 1000
    assert all(f is not None for f in found)
    ordered = sorted(samples)
    result = FeatureResult(
        summary.rows,
        summary.rows_per_second,
        statistics.median(samples),
        ordered[max(0, round(0.99 * len(ordered)) - 1)],
        many_ms,
        store.freshness(ids[0]),
    )
    table = new_table(TITLES[9], "feature store (one hash per user)", "result")
    table.add_row("materialised from SQL", f"{result.entities:,} users, {result.rows_per_second:,.0f} rows/s")
    table.add_row("one user: p50 / p99", f"{format_ms(result.get_p50_ms)} / {format_ms(result.get_p99_ms)}")
    table.add_row(f"get_many({len(batch)}): one round trip", format_ms(many_ms))
    table.add_row("freshness of the features", f"{result.freshness_s or 0:.1f} s old (a model can refuse stale ones)")
    table.caption = (
        "every hash has its updated_at and a TTL; a feature dropped from the query is removed on the next run"
    )
    console.print(table)
    return result


@dataclass(frozen=True)
class DashboardResult:
    viewers: int
    query_ms: float
    naive_executions: int
    naive_db_ms: float
    cached_executions: int
    cached_db_ms: float


def dashboard(console: Console, cache: Cache, db_path: Path, viewers: int = 50) -> DashboardResult:
    """``viewers`` open the same cold dashboard at once: without the cache, and with :class:`QueryCache`."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{db_path}", pool_size=10, max_overflow=40)
    executions: list[float] = []
    lock = threading.Lock()
    started_at: dict[Any, float] = {}

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started_at[cursor] = time.perf_counter()

    @sqlalchemy.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "GROUP BY u.country" in statement:
            with lock:
                executions.append((time.perf_counter() - started_at.pop(cursor, time.perf_counter())) * 1000)

    def run_query() -> list[Any]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sqlalchemy.text(DASHBOARD_SQL))]

    try:
        run_query()  # warm SQLite's page cache, so both sides start alike
        one_ms = executions.pop()
        with ThreadPoolExecutor(viewers) as pool:
            naive = list(pool.map(lambda _: run_query(), range(viewers)))
        naive_runs, naive_ms = len(executions), sum(executions)
        executions.clear()
        qc = QueryCache(cache, engine, ttl=300)
        qc.invalidate(DASHBOARD_SQL)
        with ThreadPoolExecutor(viewers) as pool:
            cached = list(pool.map(lambda _: qc.rows(DASHBOARD_SQL, tags=("purchases",)), range(viewers)))
        cached_runs, cached_ms = len(executions), sum(executions)
        assert all(len(rows) == len(naive[0]) for rows in cached)
        qc.invalidate(DASHBOARD_SQL)
    finally:
        engine.dispose()
    result = DashboardResult(viewers, one_ms, naive_runs, naive_ms, cached_runs, cached_ms)
    table = new_table(TITLES[10], f"{viewers} viewers open one cold dashboard", "executions", "database time")
    table.add_row("no cache", str(naive_runs), format_ms(naive_ms))
    table.add_row("QueryCache (single flight)", str(cached_runs), format_ms(cached_ms))
    table.caption = (
        f"one execution takes {format_ms(one_ms)}; keyed by the normalised SQL, its parameters and the database, "
        "invalidated per table by the ETL job (tags)"
    )
    console.print(table)
    return result
