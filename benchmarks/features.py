"""Feature store: materialisation rows/s, and online ``get_many(1000)`` beside a plain redis-py pipeline.

Against a private embedded Valkey started for this run (its unix socket), or ``--url redis://host:port/db`` (keys
get a unique ``cwbench-…`` namespace and are deleted at the end; nothing is flushed).

Cases: ``materialize`` of ``--users`` generated users (3 features each: a float, an int, a short string) from an
in-memory generator, and ``materialize_sql`` of the seed's ``avg(amount) AS avg_ticket … GROUP BY user_id`` over a
SQLite file of 2 purchases per user (``--no-sql`` skips it); then, on the stored hashes, ``get_many`` of 1000 random
ids against a redis-py pipeline of 1000 ``HGETALL`` (raw bytes, and with the same orjson decoding), and ``get`` of
one entity (p50/p99 over ``--n`` calls).  Online figures are medians over ``--rounds`` rounds, round-robin.
Targets (issue #6): get_many(1000) ≤ 1.2× the raw pipeline, one entity < 1 ms p99, ≥ 100 000 entities/s.

Run from the repository root: ``.venv/bin/python benchmarks/features.py [--users N] [--rounds R] [--url URL]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis

from cachewise import Cache
from cachewise.features import FeatureStore
from cachewise.server.embedded import EmbeddedServer


def rows(users: int) -> Iterator[dict[str, Any]]:
    for i in range(1, users + 1):
        yield {"user_id": i, "avg_ticket": (i % 9000) / 100 + 1.0, "n_purchases": i % 17, "segment": f"s{i % 5}"}


def sql_case(store: FeatureStore, users: int) -> tuple[int, float]:
    import sqlalchemy as sa

    with tempfile.TemporaryDirectory() as folder:
        engine = sa.create_engine(f"sqlite:///{os.path.join(folder, 'bench.sqlite3')}")
        table = sa.Table(
            "purchases",
            sa.MetaData(),
            sa.Column("user_id", sa.Integer, index=True),
            sa.Column("amount", sa.Numeric(10, 2)),
        )
        table.create(engine)
        with engine.begin() as conn:
            conn.execute(
                table.insert(), [{"user_id": i // 2 + 1, "amount": (i * 7 % 9000) / 100} for i in range(2 * users)]
            )
        summary = store.materialize_sql(
            engine, "SELECT user_id, avg(amount) AS avg_ticket FROM purchases GROUP BY user_id"
        )
        engine.dispose()
    return summary.rows, summary.rows_per_second


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--n", type=int, default=5000, help="single-entity gets for p50/p99")
    parser.add_argument("--url", default=None)
    parser.add_argument("--no-sql", action="store_true")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
    namespace = f"cwbench-{uuid.uuid4().hex[:10]}"
    cache = Cache(url, namespace=namespace)
    raw = redis.Redis.from_url(cache.connection.target)
    try:
        store = FeatureStore(cache, entity="user", ttl=3600)
        summary = store.materialize(rows(args.users))
        print(
            f"materialize (generator): {summary.rows} rows in {summary.seconds:.2f} s = "
            f"{summary.rows_per_second:,.0f} rows/s (target >= 100,000)"
        )
        if not args.no_sql:
            sql_store = FeatureStore(cache, entity="buyer", ttl=3600, id_column="user_id")
            n, rate = sql_case(sql_store, args.users)
            print(f"materialize_sql (SQLite, GROUP BY): {n} rows, {rate:,.0f} rows/s (query time included)")

        rng = random.Random(1)
        keys_for: Callable[[list[int]], list[str]] = lambda ids: [store.key(i) for i in ids]  # noqa: E731

        def raw_pipeline(ids: list[int], decode: bool) -> list[Any]:
            pipe = raw.pipeline(transaction=False)
            for key in keys_for(ids):
                pipe.hgetall(key)
            replies = pipe.execute()
            if decode:
                return [{k.decode(): orjson.loads(v) for k, v in r.items()} or None for r in replies]
            return replies

        assert store.get_many([1, 2])[0] is not None
        cases: dict[str, Callable[[list[int]], Any]] = {
            "raw pipeline HGETALL x1000": lambda ids: raw_pipeline(ids, False),
            "raw pipeline + orjson decode": lambda ids: raw_pipeline(ids, True),
            "FeatureStore.get_many(1000)": store.get_many,
            "get_many(1000, 2 features)": lambda ids: store.get_many(ids, ["avg_ticket", "segment"]),
        }
        figures: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.rounds):
            ids = rng.sample(range(1, args.users + 1), 1000)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                figures[name].append(timed(functools.partial(cases[name], ids)))
        base = statistics.median(figures[names[0]])
        for name in names:
            med = statistics.median(figures[name])
            print(f"{name:32s} {med * 1000:7.2f} ms  {med / base:5.2f}x raw")
        print("target: FeatureStore.get_many(1000) <= 1.2x raw pipeline")

        one = []
        for _ in range(args.n):
            i = rng.randint(1, args.users)
            started = time.perf_counter()
            store.get(i)
            one.append(time.perf_counter() - started)
        one.sort()
        p50, p99 = one[len(one) // 2], one[int(len(one) * 0.99)]
        print(f"get(one entity): p50 {p50 * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs (target p99 < 1000 µs)")
    finally:
        cache.clear()
        raw.close()
        cache.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
