"""QueryCache: SQL normalisation and keys (pure), DataFrame encoding (pure), and real queries on SQLite and
PostgreSQL through a real cache server: single flight, invalidation, size limit, context isolation."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from cachewise import Cache
from cachewise.query import QueryCache, frames
from cachewise.query.normalize import canonical, database_identity, normalize_sql, query_key

DB = "sqlite:////tmp/a.sqlite3"


# -- normalisation (pure) ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT  a,\n\tb  FROM t ", "SELECT a, b FROM t"),
        ("SELECT a -- the a column\nFROM t", "SELECT a FROM t"),
        ("SELECT a /* block\n comment */ FROM t", "SELECT a FROM t"),
        ("SELECT a/**/FROM t", "SELECT a FROM t"),
        ("SELECT 1 -- trailing", "SELECT 1"),
        ("SELECT 'a -- not a comment' FROM t", "SELECT 'a -- not a comment' FROM t"),
        ("SELECT '/* kept */   x' FROM t", "SELECT '/* kept */   x' FROM t"),
        ("SELECT 'it''s  -- here' -- gone\n", "SELECT 'it''s  -- here'"),
        ('SELECT "odd  -- col" FROM t', 'SELECT "odd  -- col" FROM t'),
        ("SELECT $$ a -- b $$, $tag$ /* x */ $tag$", "SELECT $$ a -- b $$, $tag$ /* x */ $tag$"),
        ("SELECT a - b, c / d FROM t WHERE x = $1", "SELECT a - b, c / d FROM t WHERE x = $1"),
        ("select 'MiXeD' FROM T", "select 'MiXeD' FROM T"),
        ("SELECT 'unterminated  --", "SELECT 'unterminated  --"),
    ],
)
def test_normalize_sql(sql: str, expected: str) -> None:
    assert normalize_sql(sql) == expected


def test_same_query_with_other_whitespace_and_comments_shares_a_key() -> None:
    a = "SELECT region, SUM(amount) FROM sales WHERE year = :y GROUP BY region"
    b = (
        "-- dashboard: sales by region\nSELECT region,\n   SUM(amount) /* total */\n"
        "FROM sales\nWHERE year = :y\nGROUP BY region"
    )
    assert query_key(a, {"y": 2026}, DB) == query_key(b, {"y": 2026}, DB)


def test_keys_differ_for_different_sql_params_database_or_context() -> None:
    sql = "SELECT * FROM t WHERE x = :x"
    base = query_key(sql, {"x": 1}, DB)
    others = [
        query_key("SELECT * FROM t WHERE x = :x ORDER BY 1", {"x": 1}, DB),
        query_key("SELECT * FROM t WHERE x = 'a  b'", None, DB),
        query_key(sql, {"x": 2}, DB),
        query_key(sql, {"x": "1"}, DB),
        query_key(sql, {"x": 1.0}, DB),
        query_key(sql, {"x": True}, DB),
        query_key(sql, {"x": decimal.Decimal("1")}, DB),
        query_key(sql, {"x": [1]}, DB),
        query_key(sql, {"x": None}, DB),
        query_key(sql, {"y": 1}, DB),
        query_key(sql, {"x": 1, "y": None}, DB),
        query_key(sql, {"x": 1}, "sqlite:////tmp/b.sqlite3"),
        query_key(sql, {"x": 1}, DB, context={"user": "alice"}),
        query_key(sql, {"x": 1}, DB, context={"user": "bob"}),
        query_key(sql, {"x": 1}, DB, context={"tenant": "alice"}),
    ]
    assert len({base, *others}) == len(others) + 1
    # literals keep their whitespace and case
    assert query_key("SELECT 'a  b'", None, DB) != query_key("SELECT 'a b'", None, DB)
    assert query_key("SELECT 'A'", None, DB) != query_key("SELECT 'a'", None, DB)
    # parameter order does not matter
    assert query_key(sql, {"a": 1, "b": 2}, DB) == query_key(sql, {"b": 2, "a": 1}, DB)
    assert query_key(sql, None, DB) == query_key(sql, {}, DB)


def test_canonical_refuses_values_without_a_stable_identity() -> None:
    with pytest.raises(TypeError):
        canonical(object())
    assert canonical(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) != canonical(dt.datetime(2026, 1, 1))


def test_database_identity_has_no_password_and_tells_databases_apart(tmp_path: Any) -> None:
    a = sa.create_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    b = sa.create_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    assert database_identity(a.url) != database_identity(b.url)
    p1 = sa.make_url("postgresql+psycopg://app:secret1@db/sales")
    p2 = sa.make_url("postgresql+psycopg://app:secret2@db/sales")
    assert "secret" not in database_identity(p1)
    assert database_identity(p1) == database_identity(p2)  # the same database whoever's password
    assert database_identity(p1) != database_identity(sa.make_url("postgresql+psycopg://app:secret1@db/other"))
    cache = Cache.__new__(Cache)  # key_for is pure: no server needed
    assert QueryCache(cache, a).key_for("SELECT 1") != QueryCache(cache, b).key_for("SELECT 1")
    a.dispose()
    b.dispose()


# -- DataFrame encoding (pure) -------------------------------------------------------------------------------------
def test_dataframe_round_trip_keeps_dtypes() -> None:
    df = pd.DataFrame(
        {
            "i": pd.Series([1, 2, 3], dtype="int64"),
            "f": pd.Series([1.5, None, 3.25], dtype="float64"),
            "s": pd.Series(["a", None, "ç"], dtype="str"),
            "o": pd.Series(["x", None, "z"], dtype="object"),
            "t": pd.Series(pd.to_datetime(["2026-01-01 10:00", None, "2026-03-01 00:00"], utc=True)).astype(
                "datetime64[ns, UTC]"
            ),
            "tz": pd.Series(pd.to_datetime(["2026-01-01 10:00", "2026-06-01 00:00", None])).dt.tz_localize(
                "Europe/Paris"
            ),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "c": pd.Categorical(["lo", "hi", "lo"]),
        }
    )
    back = frames.from_cache_value(frames.to_cache_value(df))
    assert list(back.dtypes.astype(str)) == list(df.dtypes.astype(str))
    pd.testing.assert_frame_equal(back, df)
    assert back["t"].dtype == "datetime64[ns, UTC]" and back["n"].isna().tolist() == [False, True, False]


def test_polars_round_trip_keeps_dtypes() -> None:
    import datetime as dt
    from decimal import Decimal

    import polars as pl

    df = pl.DataFrame(
        {
            "i": pl.Series([1, None, 3], dtype=pl.Int64),
            "f": [1.5, None, 3.25],
            "s": ["a", None, "ç"],
            "t": pl.Series(
                [dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc), None, dt.datetime(2026, 3, 1)],
                dtype=pl.Datetime("us", "Europe/Paris"),
            ),
            "d": pl.Series([Decimal("1.10"), None, Decimal("-2.25")], dtype=pl.Decimal(10, 2)),
            "b": [True, None, False],
            "c": pl.Series(["lo", "hi", "lo"], dtype=pl.Categorical),
        }
    )
    value = frames.to_cache_value(df)
    assert value["kind"] == "polars"
    back = frames.from_cache_value(value)
    assert isinstance(back, pl.DataFrame)
    assert back.schema == df.schema
    assert back.equals(df)
    with pytest.raises(TypeError, match="pandas or polars"):
        frames.to_cache_value([1, 2])  # type: ignore[arg-type]


# -- against real databases and servers ----------------------------------------------------------------------------
ROWS = 3000
REGIONS = ("north", "south", "east", "west")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(database_url, pool_size=10, max_overflow=60, pool_timeout=10)
    yield eng
    eng.dispose()


@pytest.fixture
def sales(engine: sa.Engine) -> Iterator[sa.Table]:
    meta = sa.MetaData()
    table = sa.Table(
        f"qc_sales_{uuid.uuid4().hex[:10]}",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("region", sa.String(20), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("units", sa.Integer, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    meta.create_all(engine)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [
        {
            "id": i,
            "region": REGIONS[i % 4],
            "year": 2025 + (i // 4) % 2,
            "amount": (i % 97) * 1.25,
            "units": None if i % 10 == 0 else i % 13,
            "at": start + dt.timedelta(minutes=i),
        }
        for i in range(ROWS)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)  # one parametrised executemany
    yield table
    meta.drop_all(engine)


def count_executions(engine: sa.Engine, table: sa.Table) -> list[str]:
    """Statements over ``table`` that reach the database (SELECTs only), recorded on the database side."""
    seen: list[str] = []
    lock = threading.Lock()

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if table.name in statement and "SELECT" in statement.upper() and "INSERT" not in statement.upper():
            with lock:
                seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen


def dashboard(table: sa.Table) -> str:
    # A self-join makes the aggregation do real work (tens of ms), so that the 50 callers overlap.
    return f"""
        -- sales by region
        SELECT a.region AS region, COUNT(*) AS n, SUM(a.amount) AS total, SUM(a.units) AS units
        FROM {table.name} a JOIN {table.name} b ON b.region = a.region AND b.id % 7 = 0
        WHERE a.year = :year
        GROUP BY a.region ORDER BY a.region
    """


@pytest.mark.parametrize("lease_ttl", [None, 30.0])
def test_50_threads_on_a_cold_query_run_it_once(
    cache: Cache, engine: sa.Engine, sales: sa.Table, lease_ttl: float | None
) -> None:
    qc = QueryCache(cache, engine, ttl=60, lease_ttl=lease_ttl)
    with engine.connect() as conn:
        expected = [dict(r._mapping) for r in conn.execute(sa.text(dashboard(sales)), {"year": 2026})]
    executed = count_executions(engine, sales)
    barrier = threading.Barrier(50)
    results: list[Any] = [None] * 50

    def viewer(i: int) -> None:
        barrier.wait()
        results[i] = qc.rows(dashboard(sales), {"year": 2026}, tags=("sales",))

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(executed) == 1
    stats = cache.stats().total
    assert stats.leases == 1 and stats.waits >= 1, stats  # the others really waited for the one query
    assert all(r == results[0] for r in results)
    assert [r["region"] for r in results[0]] == sorted(REGIONS)
    assert results[0] == expected
    # other whitespace/comments: the same entry
    assert qc.rows(" ".join(dashboard(sales).split("\n")[2:]), {"year": 2026}, tags=("sales",)) == results[0]
    assert len(executed) == 1
    assert qc.stats()["executions"] == 1


@pytest.mark.parametrize("lease_ttl", [None, 30.0])
async def test_50_tasks_on_a_cold_query_run_it_once(
    server_url: str, unique_namespace: str, engine: sa.Engine, sales: sa.Table, lease_ttl: float | None
) -> None:
    executed = count_executions(engine, sales)
    async with Cache(server_url, namespace=unique_namespace) as cache:
        qc = QueryCache(cache, engine, ttl=60, lease_ttl=lease_ttl)
        results = await asyncio.gather(*(qc.arows(dashboard(sales), {"year": 2026}) for _ in range(50)))
        assert len(executed) == 1
        assert all(r == results[0] for r in results) and len(results[0]) == 4
        frames_ = await asyncio.gather(*(qc.adataframe(dashboard(sales), {"year": 2026}) for _ in range(50)))
        assert len(executed) == 2  # the DataFrame is its own entry, loaded once too
        for f in frames_:
            pd.testing.assert_frame_equal(f, frames_[0])
        assert frames_[0]["region"].tolist() == [r["region"] for r in results[0]]


def test_polars_from_the_database_miss_hit_and_invalidate(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    import polars as pl

    qc = QueryCache(cache, engine, ttl=60)
    executed = count_executions(engine, sales)
    sql = f"SELECT id, region, amount, units, at FROM {sales.name} WHERE id < :n ORDER BY id"
    miss = qc.polars(sql, {"n": 20})
    hit = qc.polars(sql, {"n": 20})
    assert len(executed) == 1
    assert isinstance(hit, pl.DataFrame) and hit.equals(miss) and hit.schema == miss.schema
    assert hit.schema["id"] == pl.Int64 and hit.height == 20
    assert hit["units"].null_count() == 2  # ids 0 and 10
    if engine.dialect.name == "postgresql":  # timestamptz arrives as aware datetimes
        at = hit.schema["at"]
        assert isinstance(at, pl.Datetime) and at.time_zone in ("UTC", "Etc/UTC")
    pandas_frame = qc.dataframe(sql, {"n": 20})  # its own entry: pandas dtypes, not polars'
    assert len(executed) == 2 and pandas_frame["id"].tolist() == hit["id"].to_list()
    assert qc.invalidate(sql, {"n": 20})
    for suffix in ("", ":df", ":pl"):
        assert cache.get(qc.key_for(sql, {"n": 20}) + suffix) is None
    qc.polars(sql, {"n": 20})
    assert len(executed) == 3

    async def viewers() -> list[pl.DataFrame]:
        try:
            return await asyncio.gather(*(qc.apolars(sql, {"n": 30}) for _ in range(20)))
        finally:
            await cache.connection.aclose_loop()

    got = asyncio.run(viewers())
    assert len(executed) == 4  # 20 concurrent tasks, one execution
    assert all(f.equals(got[0]) for f in got) and got[0].height == 30


def test_dataframe_from_the_database_is_the_same_on_miss_and_hit(
    cache: Cache, engine: sa.Engine, sales: sa.Table
) -> None:
    qc = QueryCache(cache, engine, ttl=60)
    executed = count_executions(engine, sales)
    sql = f"SELECT id, region, amount, units, at FROM {sales.name} WHERE id < :n ORDER BY id"
    miss = qc.dataframe(sql, {"n": 20})
    hit = qc.dataframe(sql, {"n": 20})
    assert len(executed) == 1
    pd.testing.assert_frame_equal(miss, hit)
    assert str(hit["id"].dtype) == "int64" and str(hit["amount"].dtype) == "float64"
    assert hit["units"].isna().sum() == 2  # ids 0 and 10
    if engine.dialect.name == "postgresql":  # timestamptz arrives as aware datetimes
        assert isinstance(hit["at"].dtype, pd.DatetimeTZDtype) and hit["at"].iloc[0] == pd.Timestamp(
            "2026-01-01", tz="UTC"
        )
    else:  # SQLite has no timestamp type: raw SQL gets the stored text
        assert str(hit["at"].dtype) == "str"
    assert len(qc.rows(sql, {"n": 20})) == 20  # rows and DataFrame are separate entries
    assert len(executed) == 2


def test_invalidate_and_table_tags(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    qc = QueryCache(cache, engine, ttl=60)
    executed = count_executions(engine, sales)
    total = f"SELECT SUM(amount) AS total FROM {sales.name} WHERE year = :year"
    count = f"SELECT COUNT(*) AS n FROM {sales.name} WHERE region = :region"
    qc.rows(total, {"year": 2026}, tags=("sales",))
    qc.rows(count, {"region": "north"}, tags=("sales",))
    qc.rows(total, {"year": 2026}, tags=("sales",))
    assert len(executed) == 2
    assert qc.invalidate(total, {"year": 2026}) is True
    assert qc.invalidate(total, {"year": 1999}) is False
    qc.rows(total, {"year": 2026}, tags=("sales",))
    qc.rows(count, {"region": "north"}, tags=("sales",))
    assert len(executed) == 3
    with engine.begin() as conn:  # the ETL job: new rows, then one call
        conn.execute(
            sales.insert(),
            [{"id": ROWS, "region": "north", "year": 2026, "amount": 1000.0, "units": 1, "at": dt.datetime.now()}],
        )
    assert qc.invalidate_tags("sales") == 1
    after = qc.rows(count, {"region": "north"}, tags=("sales",))
    qc.rows(total, {"year": 2026}, tags=("sales",))
    assert len(executed) == 5
    assert after == [{"n": ROWS // 4 + 1}]


def test_context_keeps_users_apart(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    qc = QueryCache(cache, engine, ttl=60)
    executed = count_executions(engine, sales)
    sql = f"SELECT COUNT(*) AS n FROM {sales.name}"
    qc.rows(sql, context={"user": "alice", "tenant": 1})
    qc.rows(sql, context={"user": "bob", "tenant": 1})
    assert len(executed) == 2  # bob did not get alice's entry
    qc.rows(sql, context={"tenant": 1, "user": "alice"})
    qc.rows(sql, context={"user": "bob", "tenant": 1})
    assert len(executed) == 2
    qc.rows(sql)
    assert len(executed) == 3
    assert qc.key_for(sql, context={"user": "alice"}) != qc.key_for(sql, context={"user": "bob"})


def test_oversize_results_are_returned_whole_and_not_cached(
    cache: Cache, engine: sa.Engine, sales: sa.Table, caplog: pytest.LogCaptureFixture
) -> None:
    qc = QueryCache(cache, engine, ttl=60, max_bytes=2000)
    executed = count_executions(engine, sales)
    sql = f"SELECT id, region, amount FROM {sales.name} WHERE year = :year ORDER BY id"
    with caplog.at_level("WARNING", logger="cachewise.query"):
        first = qc.rows(sql, {"year": 2026})
    second = qc.rows(sql, {"year": 2026})
    assert len(first) == len(second) == ROWS // 2 and first == second  # never truncated
    assert len(executed) == 2  # not cached
    assert qc.stats()["oversize"] == 1
    assert any("not caching query" in r.getMessage() for r in caplog.records)
    df = qc.dataframe(sql, {"year": 2026})
    assert len(df) == ROWS // 2
    small = f"SELECT COUNT(*) AS n FROM {sales.name}"
    qc.rows(small)
    qc.rows(small)
    assert len(executed) == 4  # small results are cached as usual

    # the oversize marker sends every later reader to the database, whole: frames, and from asyncio too
    pd.testing.assert_frame_equal(qc.dataframe(sql, {"year": 2026}), df)

    async def again() -> tuple[list[dict[str, Any]], Any]:
        try:
            return await qc.arows(sql, {"year": 2026}), await qc.adataframe(sql, {"year": 2026})
        finally:
            await cache.connection.aclose_loop()

    async_rows, async_df = asyncio.run(again())
    assert async_rows == first
    pd.testing.assert_frame_equal(async_df, df)
    assert len(executed) == 7


def test_refresh_every_aligns_expiry(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    qc = QueryCache(cache, engine, refresh_every=dt.timedelta(hours=1))
    sql = f"SELECT COUNT(*) AS n FROM {sales.name}"
    qc.rows(sql)
    left = cache.ttl(qc.key_for(sql))
    now = dt.datetime.now(dt.timezone.utc)
    to_hour = 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)
    assert left is not None and (left <= to_hour + 1 or to_hour < 2)  # (the hour may turn during the test)
    qc.rows("SELECT 1 AS one", ttl=5)
    left = cache.ttl(qc.key_for("SELECT 1 AS one"))
    assert left is not None and left <= 5


def test_a_query_slower_than_its_lease_still_runs_once(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    """A 2.5 s query with a 1 s lease: the lease heartbeat keeps it with the viewer running the query, and the
    others wait for it (QueryCache's max_wait), so 20 viewers run it once.  The delay is the database's own
    (pg_sleep; on SQLite a registered function that sleeps), inside the statement."""
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def add_sleep(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.create_function("cw_sleep", 1, lambda seconds: time.sleep(seconds) or 0)

        engine.dispose()  # new connections get the function
        delay = "cw_sleep(:delay)"
    else:
        delay = "(SELECT 0 FROM pg_sleep(:delay))"
    sql = f"SELECT region, COUNT(*) AS n, {delay} AS slept FROM {sales.name} GROUP BY region ORDER BY region"
    executed = count_executions(engine, sales)
    qc = QueryCache(cache, engine, ttl=60, lease_ttl=1.0)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: qc.rows(sql, {"delay": 2.5}), range(20)))
    keeper = cache.engine.keeper
    assert len(executed) == 1, (
        f"the query ran more than once: {keeper.extended} extended, {keeper.lost} lost, "
        f"renewal up to {keeper.most_late * 1000:.0f} ms late, {cache.stats().total}"
    )
    assert all(r == results[0] for r in results) and len(results[0]) == len(REGIONS)
    assert cache.stats().total.refused_writes == 0 and cache.engine.keeper.extended >= 2
    assert qc.rows(sql, {"delay": 2.5}) == results[0] and len(executed) == 1  # stored: a hit


def test_dataframes_ask_for_distinct_column_names(cache: Cache, engine: sa.Engine, sales: sa.Table) -> None:
    from cachewise.errors import ConfigurationError

    qc = QueryCache(cache, engine, ttl=60)
    sql = f"SELECT a.id, b.id FROM {sales.name} a JOIN {sales.name} b ON a.id = b.id WHERE a.id < 3"
    for read in (qc.polars, qc.dataframe, qc.rows):  # never one value silently dropped
        with pytest.raises(ConfigurationError, match="give the repeated ones an alias"):
            read(sql)
    fixed = f"SELECT a.id AS a_id, b.id AS b_id FROM {sales.name} a JOIN {sales.name} b ON a.id = b.id WHERE a.id < 3"
    assert qc.polars(fixed).columns == ["a_id", "b_id"]
