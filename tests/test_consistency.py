"""A randomised consistency checker: cache-aside with leases against a real database table, from 8 processes.

Each run: 8 worker processes (``spawn``: no Redis connection or SQLAlchemy pool is shared), each with its own
:class:`~cachewise.Cache` (same server, same namespace) and its own engine, do 1 250 operations each (10 000 in all)
on 50 rows of a fresh table (SQLite file or PostgreSQL):

* a **write** updates the row (``version = version + 1``, a new value) and commits, then ``cache.delete(key)``
  (delete-on-write); only then is it *acknowledged*: ``(ack time, key, version)`` is logged;
* a **read** logs ``(start time, key, version, value)`` of ``cache.get_or_set(key, loader)``, whose loader reads the
  row and then sleeps a random 0–10 ms *after* the database read, the window of the stale-set race.

Afterwards the parent checks, in pure Python, that no read that started after a write was acknowledged returned an
older version than that write (a *stale read*), and that every value left in the cache equals its row.  The same
run is made with leases (``single_flight=True``, the default: both checks asserted) and as naive cache-aside
(``single_flight=False``: nothing asserted but completion and harness sanity; its counts are printed beside the
protected run's, ``pytest -s`` shows them, and they are recorded with ``record_property``).

Times are ``time.monotonic_ns()``: on Linux (and macOS, Windows) the monotonic clock is system-wide, so stamps taken
in different processes on one machine are comparable.

Both modes run the full 10 000 operations on every combination: on the 2-core development machine one combination
(both modes) took 9–20 s, of which 2–4 s per run is starting 8 ``spawn`` processes; the whole file 47–65 s.
The writes are 25 % of the operations and the loader delay 0–10 ms, to make the race window wide: in all 14 naive
runs measured (on all four combinations) 325–624 of ~7 500 reads were stale, while the leased runs
had 0 stale reads (and refused 133–206 stale stores each).

The deterministic replay of the stale-set race (events force the interleaving) is in ``test_single_flight.py``.
"""

from __future__ import annotations

import bisect
import functools
import multiprocessing
import multiprocessing.queues
import queue
import random
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier as BarrierType
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise import MISSING, Cache

N_WORKERS = 8
N_OPS = 10_000
N_KEYS = 50
WRITE_RATIO = 0.25
#: Loader delay after the database read, in seconds (uniform in [0, MAX_LOAD_DELAY]): the stale-set race window.
MAX_LOAD_DELAY = 0.010
TTL = 300
#: A run that has not finished after this long has hung.
RUN_TIMEOUT = 180.0

Read = tuple[int, int, int, str]  # (start ns, row id, version returned, value returned)
Write = tuple[int, int, int, str]  # (acknowledged ns, row id, version written, value written)
#: ``make_table``: a function that creates a fresh table of N_KEYS rows, and the engine it was created with.
TableMaker = tuple[Callable[[], sa.Table], Engine]


def _initial_value(row_id: int) -> str:
    return f"initial-{row_id}"


def _table(name: str) -> sa.Table:
    """The rows table (a Table object: its name cannot be a bind parameter, its values always are)."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )


def _engine(url: str) -> Engine:
    """An engine whose concurrent writers wait for each other (SQLite: WAL, a 30 s busy timeout)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_size=2, max_overflow=0)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


@dataclass(frozen=True)
class Plan:
    """What one worker process does."""

    index: int
    server_url: str
    namespace: str
    database_url: str
    table: str
    prefix: str
    single_flight: bool
    ops: int
    seed: int


@dataclass
class Outcome:
    """What one worker did."""

    index: int
    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    loads: int = 0
    refused_writes: int = 0
    waits: int = 0
    wait_timeouts: int = 0
    errors: int = 0
    seconds: float = 0.0
    error: str | None = None


def _work(plan: Plan, barrier: BarrierType, results: multiprocessing.queues.Queue[Outcome]) -> None:
    """One worker process: its own engine and cache, ``plan.ops`` random reads and writes, results on the queue."""
    outcome = Outcome(plan.index)
    try:
        rng = random.Random(plan.seed)
        table = _table(plan.table)
        engine = _engine(plan.database_url)
        select = sa.select(table.c.version, table.c.value).where(table.c.id == sa.bindparam("row_id"))
        update = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values(version=table.c.version + 1, value=sa.bindparam("new_value"))
            .returning(table.c.version)
        )
        with Cache(plan.server_url, namespace=plan.namespace) as cache:

            def loader(row_id: int) -> list[Any]:
                with engine.connect() as conn:
                    version, value = conn.execute(select, {"row_id": row_id}).one()
                time.sleep(rng.uniform(0, MAX_LOAD_DELAY))  # after the read: a write may land meanwhile
                return [version, value]

            cache.get(f"{plan.prefix}:warm-up")  # connect before the start line
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            barrier.wait(60)
            started = time.perf_counter()
            for op in range(plan.ops):
                row_id = rng.randrange(N_KEYS)
                key = f"{plan.prefix}:{row_id}"
                if rng.random() < WRITE_RATIO:
                    new_value = f"w{plan.index}-{op}-{rng.getrandbits(32):08x}"
                    with engine.begin() as conn:
                        version = conn.execute(update, {"row_id": row_id, "new_value": new_value}).scalar_one()
                    cache.delete(key)
                    outcome.writes.append((time.monotonic_ns(), row_id, version, new_value))
                else:
                    start = time.monotonic_ns()
                    got = cache.get_or_set(
                        key, functools.partial(loader, row_id), ttl=TTL, single_flight=plan.single_flight
                    )
                    outcome.reads.append((start, row_id, got[0], got[1]))
            outcome.seconds = time.perf_counter() - started
            total = cache.stats().total
            outcome.loads, outcome.refused_writes = total.loads, total.refused_writes
            outcome.waits, outcome.wait_timeouts, outcome.errors = total.waits, total.wait_timeouts, total.errors
        engine.dispose()
    except BaseException:
        outcome.error = traceback.format_exc()
        barrier.abort()
    results.put(outcome)


# -- the checker (pure) ---------------------------------------------------------------------------------------------
def stale_reads(reads: list[Read], writes: list[Write]) -> list[tuple[Read, Write]]:
    """Reads that returned an older version than a write to the same row acknowledged strictly before they
    started, each with the newest such write."""
    by_row: dict[int, list[Write]] = defaultdict(list)
    for write in writes:
        by_row[write[1]].append(write)
    acks: dict[int, list[int]] = {}
    newest: dict[int, list[Write]] = {}  # newest[row][i]: the highest version among the first i + 1 acks
    for row_id, row_writes in by_row.items():
        row_writes.sort()
        acks[row_id] = [w[0] for w in row_writes]
        best: list[Write] = []
        for w in row_writes:
            best.append(w if not best or w[2] > best[-1][2] else best[-1])
        newest[row_id] = best
    found = []
    for read in reads:
        start, row_id, version, _ = read
        before = bisect.bisect_left(acks.get(row_id, []), start)  # acks strictly before the read started
        if before and newest[row_id][before - 1][2] > version:
            found.append((read, newest[row_id][before - 1]))
    return found


def torn_reads(reads: list[Read], writes: list[Write]) -> list[Read]:
    """Reads whose (version, value) pair was never a row of the table: the harness or the cache mixed data up."""
    written = {(w[1], w[2]): w[3] for w in writes}
    return [r for r in reads if (written.get((r[1], r[2])) if r[2] else _initial_value(r[1])) != r[3]]


def test_checker_flags_only_reads_that_started_after_a_newer_acknowledged_write() -> None:
    writes: list[Write] = [(100, 1, 1, "a"), (200, 1, 2, "b"), (150, 2, 1, "c")]
    reads: list[Read] = [
        (50, 1, 0, "initial-1"),  # before any write: fine
        (100, 1, 0, "initial-1"),  # started at the same instant as the ack, not after: fine
        (101, 1, 0, "initial-1"),  # stale: version 1 was acknowledged at 100
        (250, 1, 1, "a"),  # stale: version 2 was acknowledged at 200
        (250, 1, 2, "b"),  # fine
        (250, 2, 1, "c"),  # fine
        (120, 2, 0, "initial-2"),  # fine: row 2's write was acknowledged later
    ]
    assert [r for r, _ in stale_reads(reads, writes)] == [reads[2], reads[3]]
    assert torn_reads([*reads, (250, 1, 2, "a"), (1, 3, 0, "x")], writes) == [(250, 1, 2, "a"), (1, 3, 0, "x")]


# -- the runs ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    mode: str
    reads: list[Read]
    writes: list[Write]
    stale: list[tuple[Read, Write]]
    torn: list[Read]
    disagreeing: dict[int, tuple[Any, tuple[int, str]]]
    seconds: float
    worker_seconds: float
    loads: int
    refused_writes: int
    waits: int
    wait_timeouts: int
    errors: int

    def summary(self) -> str:
        return (
            f"{self.mode}: {len(self.stale)} stale of {len(self.reads)} reads, {len(self.writes)} writes, "
            f"{len(self.disagreeing)} cached values != row at the end, {self.loads} loads, {self.refused_writes} "
            f"refused stores, {self.waits} waits, {self.wait_timeouts} wait timeouts, {self.errors} cache errors; "
            f"{self.worker_seconds:.1f} s of operations, {self.seconds:.1f} s with process start-up"
        )


@pytest.fixture
def make_table(database_url: str) -> Iterator[TableMaker]:
    """Creates uniquely named tables of N_KEYS rows at version 0; drops them afterwards."""
    engine = _engine(database_url)
    created: list[sa.Table] = []

    def make() -> sa.Table:
        table = _table(f"cw_rows_{uuid.uuid4().hex[:8]}")
        table.create(engine)
        created.append(table)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, "version": 0, "value": _initial_value(i)} for i in range(N_KEYS)])
        return table

    yield make, engine
    for table in created:
        table.drop(engine, checkfirst=True)
    engine.dispose()


def _run(mode: str, server_url: str, namespace: str, database_url: str, table: sa.Table, engine: Engine) -> Run:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    results = ctx.Queue()
    seed = random.randrange(2**32)
    share, leased = N_OPS // N_WORKERS, mode == "protected"
    plans = [
        Plan(i, server_url, namespace, database_url, table.name, mode, leased, share, seed + i)
        for i in range(N_WORKERS)
    ]
    started = time.perf_counter()
    processes = [ctx.Process(target=_work, args=(plan, barrier, results), daemon=True) for plan in plans]
    for p in processes:
        p.start()
    outcomes: list[Outcome] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(outcomes) < N_WORKERS:
            try:
                outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"{mode} run (seed {seed}): only {len(outcomes)} of {N_WORKERS} workers finished in "
                            f"{RUN_TIMEOUT:.0f} s: a hang")  # fmt: skip
    finally:
        for p in processes:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    seconds = time.perf_counter() - started
    failures = [o.error for o in outcomes if o.error]
    assert not failures, f"{mode} run (seed {seed}): a worker failed:\n" + "\n".join(failures)

    reads = [r for o in outcomes for r in o.reads]
    writes = [w for o in outcomes for w in o.writes]
    assert len(reads) + len(writes) == N_OPS
    # The workers have stopped: every value left in the cache must equal its row.
    with engine.connect() as conn:
        rows = {i: (v, s) for i, v, s in conn.execute(sa.select(table.c.id, table.c.version, table.c.value))}
    per_row: dict[int, int] = defaultdict(int)
    for w in writes:
        per_row[w[1]] += 1
    assert {i: v for i, (v, _) in rows.items()} == {i: per_row[i] for i in range(N_KEYS)}  # no write lost
    disagreeing: dict[int, tuple[Any, tuple[int, str]]] = {}
    with Cache(server_url, namespace=namespace) as cache:
        for i, row in rows.items():
            cached = cache.get(f"{mode}:{i}", MISSING)
            if cached is not MISSING and tuple(cached) != row:
                disagreeing[i] = (cached, row)
    return Run(
        mode,
        reads,
        writes,
        stale_reads(reads, writes),
        torn_reads(reads, writes),
        disagreeing,
        seconds,
        max(o.seconds for o in outcomes),
        sum(o.loads for o in outcomes),
        sum(o.refused_writes for o in outcomes),
        sum(o.waits for o in outcomes),
        sum(o.wait_timeouts for o in outcomes),
        sum(o.errors for o in outcomes),
    )


@pytest.mark.slow
def test_randomised_checker_leases_never_serve_a_stale_read(
    server_url: str,
    database_url: str,
    unique_namespace: str,
    make_table: TableMaker,
    record_property: Callable[[str, object], None],
    request: pytest.FixtureRequest,
) -> None:
    make, engine = make_table
    protected = _run("protected", server_url, unique_namespace, database_url, make(), engine)
    naive = _run("naive", server_url, unique_namespace, database_url, make(), engine)

    kind = request.node.callspec.id  # e.g. "embedded-sqlite"
    print(f"\n[{kind}] stale reads: protected={len(protected.stale)} naive={len(naive.stale)} "
          f"(of {len(protected.reads)} / {len(naive.reads)} reads)")  # fmt: skip
    print(f"  {protected.summary()}\n  {naive.summary()}")
    for run in (protected, naive):
        record_property(f"{run.mode}_stale_reads", len(run.stale))
        record_property(f"{run.mode}_reads", len(run.reads))
        record_property(f"{run.mode}_cached_values_disagreeing", len(run.disagreeing))
        record_property(f"{run.mode}_seconds", round(run.seconds, 2))

    # Harness sanity, in both modes: every read returned a (version, value) pair that was a row at some point.
    assert not protected.torn and not naive.torn, (protected.torn[:3], naive.torn[:3])
    # With leases: no read that started after an acknowledged write returned an older version, and the cache
    # agrees with the table once the writers have stopped.
    assert not protected.stale, protected.stale[:5]
    assert not protected.disagreeing, protected.disagreeing
    if naive.stale:
        print("  e.g. naive (read, newer write acknowledged before it started):", naive.stale[0])
