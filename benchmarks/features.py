"""Feature store: materialisation rows/s, and online ``get_many(1000)`` beside a plain redis-py pipeline and Feast.

Against a private embedded Valkey started for this run on TCP (so that Feast, which has no unix-socket option, can
use the same server), or ``--url redis://host:port/db`` (keys get a unique ``cwbench-…`` namespace and are deleted
at the end; nothing is flushed).

Cases: ``materialize`` of ``--users`` generated users with ``--features`` features each (``feature_rows.py``: a
float, an int, a short string, then alternating floats and ints) from an in-memory generator, and
``materialize_sql`` of the seed's ``avg(amount) AS avg_ticket … GROUP BY user_id`` over a SQLite file of 2 purchases
per user (``--no-sql`` skips it); then, on the stored hashes, ``get_many`` of 1000 random ids against a redis-py
pipeline of 1000 ``HGETALL`` (raw bytes, and with the same orjson decoding), and ``get`` of one entity (p50/p99 over
``--n`` calls).  Online figures are medians over ``--rounds`` rounds, round-robin.

Feast: with ``--feast-python PATH`` (or ``CACHEWISE_FEAST_PYTHON``), a Python that has ``feast[redis]`` (install it
in a venv of its own: ``python3 -m venv /tmp/feast && /tmp/feast/bin/pip install 'feast[redis]'``), the same
users and features go through Feast's Redis online store on the same server (``feast_peer.py``, in a subprocess)
and its figures are printed beside ours.

Targets (issue #6): get_many(1000) ≤ 1.2× the raw pipeline, one entity < 1 ms p99, ≥ 100 000 entities/s.

Run from the repository root: ``.venv/bin/python benchmarks/features.py [--users N] [--features F] [--url URL]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import redis

from cachewise import Cache
from cachewise.features import FeatureStore
from common import pin, server_version, start_tcp_server, version_of
from feature_rows import kinds, row


def rows(users: int, features: int) -> Iterator[dict[str, Any]]:
    feature_kinds = kinds(features)
    for i in range(1, users + 1):
        yield row(i, feature_kinds)


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


def feast(python: str, url: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Feast's figures for the same users and features on the same server (``feast_peer.py``), or None."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "feast_peer.py")
    command = [python, script, "--url", url, "--users", str(args.users), "--features", str(args.features)]
    command += ["--rounds", str(args.rounds), "--n", str(args.n)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        print(f"Feast run failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=3, help="features per user (the seed's query has 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="FeatureStore batch_size (default: its own)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--n", type=int, default=5000, help="single-entity gets for p50/p99")
    parser.add_argument("--url", default=None)
    parser.add_argument("--no-sql", action="store_true")
    parser.add_argument("--pin", choices=("none", "same", "split"), default="none")
    parser.add_argument("--feast-python", default=os.environ.get("CACHEWISE_FEAST_PYTHON"))
    args = parser.parse_args()

    server = None
    url = args.url
    transport = url
    if url is None:
        server, url, transport = start_tcp_server()
    placement = pin(server, args.pin)
    namespace = f"cwbench-{uuid.uuid4().hex[:10]}"
    cache = Cache(url, namespace=namespace)
    raw = redis.Redis.from_url(cache.connection.target)
    batch = {} if args.batch_size is None else {"batch_size": args.batch_size}
    print(f"server: {server_version(url)} over {transport}; CPUs: {placement}")
    print(
        f"redis-py {version_of('redis')}, hiredis {version_of('hiredis')}; "
        f"{args.users} users x {args.features} features"
    )
    try:
        store = FeatureStore(cache, entity="user", ttl=3600, **batch)
        summary = store.materialize(rows(args.users, args.features))
        print(
            f"materialize (generator, batch_size={store.batch_size}): {summary.rows} rows in {summary.seconds:.2f} s"
            f" = {summary.rows_per_second:,.0f} rows/s (target >= 100,000)"
        )
        if not args.no_sql:
            sql_store = FeatureStore(cache, entity="buyer", ttl=3600, id_column="user_id", **batch)
            n, rate = sql_case(sql_store, args.users)
            print(f"materialize_sql (SQLite, GROUP BY, 1 feature): {n} rows, {rate:,.0f} rows/s (query time included)")
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
            "get_many(1000, 1 feature)": lambda ids: store.get_many(ids, ["feature_0"]),
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

        singles: dict[str, Callable[[int], Any]] = {
            "raw HGETALL(one) + orjson decode": lambda i: {
                k.decode(): orjson.loads(v) for k, v in raw.hgetall(store.key(i)).items()
            },
            "FeatureStore.get(one entity)": store.get,
        }
        times: dict[str, list[float]] = {name: [] for name in singles}
        for _ in range(args.n):
            i = rng.randint(1, args.users)
            for name, fn in singles.items():
                started = time.perf_counter()
                fn(i)
                times[name].append(time.perf_counter() - started)
        for name, one in times.items():
            one.sort()
            p50, p99 = one[len(one) // 2], one[int(len(one) * 0.99)]
            print(f"{name:32s} p50 {p50 * 1e6:5.0f} µs, p99 {p99 * 1e6:5.0f} µs (target p99 < 1000 µs)")

        if args.feast_python:
            theirs = feast(args.feast_python, url, args)
            if theirs is not None:
                print(f"Feast {theirs['feast_version']} Redis online store, same users, features and server:")
                print(
                    f"  write_to_online_store: {theirs['materialize_rows_per_s']:,} rows/s "
                    f"(ours {summary.rows_per_second / theirs['materialize_rows_per_s']:.1f}x faster)"
                )
                ours = statistics.median(figures["FeatureStore.get_many(1000)"]) * 1000
                for label, field in (
                    ("get_online_features(1000).to_dict()", "get_many_1000_ms"),
                    ("get_online_features(1000), no to_dict", "get_many_1000_ms_no_to_dict"),
                    ("RedisOnlineStore.online_read(1000)", "get_many_1000_ms_online_read"),
                ):
                    print(
                        f"  {label:40s} {theirs[field]:7.2f} ms  {theirs[field] / base / 1000:5.2f}x raw "
                        f"(ours {ours:.2f} ms)"
                    )
                print(
                    f"  get_online_features(one): p50 {theirs['one_p50_us']:.0f} µs, p99 {theirs['one_p99_us']:.0f} µs"
                )
        else:
            print("Feast: not measured (pass --feast-python PATH to a Python with feast[redis] installed)")
    finally:
        cache.clear()
        raw.close()
        cache.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
