"""The dashboard story: 50 viewers open the same dashboard at once, its chart is a real multi-second aggregation.

Without a cache every viewer runs the query (50 × the database time); with :class:`~cachewise.query.QueryCache`
the first viewer runs it once and the other 49 wait for its result (single flight).  The first viewer's lease is
kept alive while its query runs (``--lease-ttl 0.5`` shows a lease far shorter than the query surviving it), and
the others wait up to QueryCache's ``max_wait``.  Database time is measured on the database side of the driver
(SQLAlchemy ``before/after_cursor_execute``), summed over all executions.

    python benchmarks/query_cache.py                    # PostgreSQL from CACHEWISE_TEST_POSTGRES, else SQLite
    python benchmarks/query_cache.py --rows 2000000 --viewers 50 --database sqlite:////tmp/bench.sqlite3

Nothing sleeps: the origin is a real GROUP BY over generated rows (generated server-side with bound parameters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from cachewise import Cache
from cachewise.query import QueryCache

POSTGRES = os.environ.get("CACHEWISE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class DatabaseClock:
    """Executions of statements over one table and the time each took, measured around the driver's cursor."""

    def __init__(self, engine: sa.Engine, table: str) -> None:
        self.table = table
        self.times: list[float] = []
        self._lock = threading.Lock()
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("qc_started", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info["qc_started"].pop()
        if self.table in statement and statement.lstrip().upper().startswith("SELECT"):
            with self._lock:
                self.times.append(time.perf_counter() - started)

    def reset(self) -> None:
        with self._lock:
            self.times.clear()


def pick_database(url: str | None) -> str:
    if url:
        return url
    try:
        engine = sa.create_engine(POSTGRES, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return POSTGRES
    except Exception:
        return "sqlite:////tmp/cachewise-query-bench.sqlite3"


def create_sales(engine: sa.Engine, rows: int) -> str:
    name = f"bench_sales_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, region INTEGER, product INTEGER, amount REAL)")
        )
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    f"INSERT INTO {name} SELECT g, g % 17, ((g % 100003) * 7919) % 100003, ((g * 31) % 1000) / 10.0 "
                    "FROM generate_series(1, :n) AS g"
                ),
                {"n": rows},
            )
            conn.execute(sa.text(f"ANALYZE {name}"))
        else:
            conn.execute(
                sa.text(
                    f"WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :n) "
                    f"INSERT INTO {name} "
                    "SELECT x, x % 17, ((x % 100003) * 7919) % 100003, ((x * 31) % 1000) / 10.0 FROM g"
                ),
                {"n": rows},
            )
    return name


def dashboard_sql(table: str) -> str:
    # Distinct products per region: a real sort/hash over every row.
    return f"""
        SELECT region, COUNT(DISTINCT product) AS products, SUM(amount) AS revenue, AVG(amount) AS basket
        FROM {table} WHERE amount >= :min_amount
        GROUP BY region ORDER BY region
    """


def run_viewers(viewers: int, view: Any) -> tuple[float, list[Any]]:
    barrier = threading.Barrier(viewers)

    def one(_: int) -> Any:
        barrier.wait()
        return view()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=viewers) as pool:
        results = list(pool.map(one, range(viewers)))
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=None, help="SQLAlchemy URL (default: PostgreSQL, else SQLite)")
    parser.add_argument("--rows", type=int, default=6_000_000)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument(
        "--lease-ttl", type=float, default=0.0, help="QueryCache(lease_ttl=...) in seconds (0: the cache's default)"
    )
    args = parser.parse_args()

    url = pick_database(args.database)
    engine = sa.create_engine(url, pool_size=args.viewers, max_overflow=10, pool_timeout=600)
    print(f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})")
    print(f"generating {args.rows:,} rows ...", flush=True)
    table = create_sales(engine, args.rows)
    clock = DatabaseClock(engine, table)
    sql, params = dashboard_sql(table), {"min_amount": 0}
    try:
        with engine.connect() as conn:  # warm the database's own caches, so both runs start alike
            expected = [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
        single = clock.times[-1]
        print(f"one execution of the dashboard query: {single:.2f} s")
        clock.reset()

        def uncached() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

        wall_without, results = run_viewers(args.viewers, uncached)
        assert all(r == expected for r in results)
        db_without, n_without = sum(clock.times), len(clock.times)
        med_without = statistics.median(clock.times)
        clock.reset()

        with Cache(namespace=f"bench-{uuid.uuid4().hex[:8]}") as cache:
            qc = QueryCache(cache, engine, ttl=300, lease_ttl=args.lease_ttl or None)
            wall_with, results = run_viewers(args.viewers, lambda: qc.rows(sql, params, tags=(table,)))
            db_with, n_with = sum(clock.times), len(clock.times)
            assert all(r == results[0] for r in results)
            hit_started = time.perf_counter()
            qc.rows(sql, params, tags=(table,))
            hit_ms = (time.perf_counter() - hit_started) * 1000
            cache.clear()

        print(f"\n{args.viewers} viewers of one cold dashboard query, {args.rows:,} rows:")
        print(f"{'':24}{'executions':>12}{'database time':>16}{'wall time':>12}")
        print(f"{'without cache':24}{n_without:>12}{db_without:>14.2f} s{wall_without:>10.2f} s")
        print(f"{'with QueryCache':24}{n_with:>12}{db_with:>14.2f} s{wall_with:>10.2f} s")
        print(
            f"(median execution without the cache, under contention: {med_without:.2f} s; a later hit: {hit_ms:.2f} ms)"
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()


if __name__ == "__main__":
    main()
