"""Four processes with the local tier on, 25 % writes over 50 keys of a real table (SQLite and PostgreSQL), writes
by ``set``, ``delete``, ``bump_version``, ``invalidate_tags`` and a plain redis-py client: once the writers stop and
the invalidations are delivered, every process reads what the table holds; a naive local TTL cache in front of the
same cache, in the same run, does not."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from sqlalchemy import text

from cachewise import Cache
from tests.processes import run_together

WORKER = r"""
import json, os, random, time
import sqlalchemy
from sqlalchemy import text
from cachewise import Cache, LocalCache
from tests.conftest import client_for

url, namespace, db, table, go = ARGS
items, history = f"{table}_items", f"{table}_history"
rng = random.Random(os.getpid())
cache = Cache(url, namespace=namespace, default_ttl=60, local=LocalCache(max_lag=0.5))
naive = {}  # what a process-local TTL cache (no invalidation) would hold: key -> (value, expires)
raw = client_for(url)
engine = sqlalchemy.create_engine(db, connect_args={"timeout": 30} if db.startswith("sqlite") else {})
KEYS = [f"item:{i}" for i in range(50)]

def row(key):
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT version FROM {items} WHERE key = :k"), {"k": key}).scalar_one()

def read(key):
    return cache.get_or_set(key, lambda: row(key), ttl=60, tags=["items"])

def naive_read(key):
    value, expires = naive.get(key, (None, 0.0))
    if time.monotonic() >= expires:
        value = read(key)
        naive[key] = (value, time.monotonic() + 30.0)
    return value

def write(key):
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {items} SET version = version + 1 WHERE key = :k"), {"k": key})
        conn.execute(
            text(f"INSERT INTO {history} SELECT key, version, :at FROM {items} WHERE key = :k"),
            {"k": key, "at": time.time()},
        )

print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
stale, oldest, writes, reads = 0, 0.0, 0, 0
deadline = time.monotonic() + 3.0
while time.monotonic() < deadline:
    key = rng.choice(KEYS)
    if rng.random() < 0.25:
        write(key)
        how = rng.randrange(5)
        if how == 0:
            cache.set(key, row(key), ttl=60, tags=["items"])
        elif how == 1:
            cache.delete(key)
        elif how == 2:
            cache.bump_version()
        elif how == 3:
            cache.invalidate_tags("items")
        else:
            raw.delete(cache.keyspace.entry(key))
        writes += 1
    else:
        got = read(key)
        naive_read(key)
        reads += 1
        if got < row(key):  # a newer write exists: how long ago did the first newer one land?
            with engine.connect() as conn:
                at = conn.execute(
                    text(f"SELECT at FROM {history} WHERE key = :k AND version = :v"), {"k": key, "v": got + 1}
                ).scalar_one_or_none()
            stale += 1
            if at is not None:
                oldest = max(oldest, time.time() - at)
time.sleep(1.0)  # the other writers are done too, and their invalidations delivered
final_stale = sum(read(k) != row(k) for k in KEYS)
naive_stale = sum(naive_read(k) != row(k) for k in KEYS)
local = cache.stats().local
print(json.dumps({"writes": writes, "reads": reads, "stale": stale, "oldest": oldest, "final_stale": final_stale,
                  "naive_stale": naive_stale, "local_hits": cache.stats().total.local_hits,
                  "invalidations": local.invalidations}))
"""


def _tables(database_url: str, table: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table}_items (key VARCHAR(32) PRIMARY KEY, version INTEGER NOT NULL)"))
        conn.execute(text(f"CREATE TABLE {table}_history (key VARCHAR(32), version INTEGER, at FLOAT)"))
        conn.execute(text(f"INSERT INTO {table}_items VALUES (:k, 0)"), [{"k": f"item:{i}"} for i in range(50)])
    return engine


def test_four_processes_read_what_the_table_holds(
    server_url: str, database_url: str, unique_namespace: str, tmp_path: Path
) -> None:
    table = "l1_" + unique_namespace.replace("-", "_")
    engine = _tables(database_url, table)
    go = tmp_path / "go"
    try:
        code = f"ARGS = {[server_url, unique_namespace, database_url, table, str(go)]!r}\n" + WORKER
        outputs = run_together(code, 4, go)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}_items"))
            conn.execute(text(f"DROP TABLE {table}_history"))
        engine.dispose()
    assert sum(o["writes"] for o in outputs) > 50 and sum(o["local_hits"] for o in outputs) > 0
    assert sum(o["invalidations"] for o in outputs) > 0
    assert [o["final_stale"] for o in outputs] == [0, 0, 0, 0], outputs  # every process reads the table
    assert max(o["oldest"] for o in outputs) < 0.5 + 0.25, outputs  # max_lag, plus a read's own time on a busy VM
    assert sum(o["naive_stale"] for o in outputs) > 0, outputs  # the naive local TTL cache, same run: stale
    print(
        f"\n4 processes: {sum(o['reads'] for o in outputs)} reads, {sum(o['writes'] for o in outputs)} writes, "
        f"{sum(o['stale'] for o in outputs)} stale reads during the run (oldest "
        f"{1000 * max(o['oldest'] for o in outputs):.1f} ms), 0 after; naive TTL cache: "
        f"{sum(o['naive_stale'] for o in outputs)} stale keys after"
    )
    with Cache(server_url, namespace=unique_namespace) as cache:  # nothing left without a TTL: the fixture checks
        cache.clear()
