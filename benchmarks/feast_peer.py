"""Peer benchmark: Feast's Redis online store, measured the way ``benchmarks/features.py`` measures FeatureStore.

Standalone: run it with a Python that has ``feast[redis]`` installed (not the repository's .venv; it does not
import cachewise), e.g. ``/work/feast-venv/bin/python benchmarks/feast_peer.py --url redis://127.0.0.1:6379/0``.

It builds a throwaway feature repo in a temporary directory (Python-API ``RepoConfig``: Redis online store, file
offline store over a small dummy parquet, local registry file; project ``cwbench_<hex>``), with an entity ``user``
(join key ``user_id``, Int64) and one FeatureView ``user_features`` of ``--features`` features (feature_0 float,
feature_1 int, feature_2 string, then alternating float/int), and times:

* ``write_to_online_store("user_features", df)`` of ``--users`` users, in ``--batch``-row DataFrames built before
  the clock starts (DataFrame construction is excluded) -> rows/s;
* ``get_online_features(all features, 1000 random ids)`` three ways -> median ms over ``--rounds`` rounds,
  round-robin: ``.to_dict()``, the ``OnlineResponse`` without ``.to_dict()``, and ``RedisOnlineStore.online_read``
  called directly with ``EntityKey`` protos (building the protos is inside the timing);
* ``get_online_features(all features, one id).to_dict()`` ``--n`` times -> p50/p99 µs.

At the end it deletes every key it wrote (Feast's Redis key is ``serialized entity key + project name``, so it
SCANs ``*<project>``; nothing is flushed) and removes the temporary directory.  Progress goes to stderr; the last
line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float64, Int64, String
from feast.version import get_version

from feature_rows import kinds, value  # beside this file

FV_NAME = "user_features"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def frame(first: int, last: int, feature_kinds: list[str], ts: datetime) -> pd.DataFrame:
    """Users ``first..last`` inclusive, one column per feature, plus ``event_timestamp``."""
    ids = range(first, last + 1)
    data: dict[str, Any] = {"user_id": pd.Series(ids, dtype="int64")}
    for k, kind in enumerate(feature_kinds):
        column = [value(i, k, kind) for i in ids]
        data[f"feature_{k}"] = pd.Series(column, dtype={"float": "float64", "int": "int64", "string": "object"}[kind])
    data["event_timestamp"] = pd.Series([ts] * len(ids), dtype="datetime64[ns, UTC]")
    return pd.DataFrame(data)


def connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=...]``."""
    parts = urlparse(url)
    if parts.scheme != "redis":
        raise SystemExit(f"only redis:// URLs are supported, got {url!r}")
    db = int(parts.path.lstrip("/") or 0)
    result = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379},db={db}"
    if parts.username:
        result += f",username={parts.username}"
    if parts.password:
        result += f",password={parts.password}"
    return result


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def delete_project_keys(client: redis.Redis, project: str) -> int:
    """Delete the keys Feast wrote for ``project`` (they end with the project name); never flushes."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--n", type=int, default=5000, help="single-entity gets for p50/p99")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per write_to_online_store call")
    parser.add_argument(
        "--skip-dedup", action="store_true", help="RedisOnlineStoreConfig(skip_dedup=True): no timestamp pre-read"
    )
    args = parser.parse_args()
    if args.features < 1 or args.users < 1000:
        raise SystemExit("need --features >= 1 and --users >= 1000")

    feature_kinds = kinds(args.features)
    feature_names = [f"feature_{k}" for k in range(args.features)]
    refs = [f"{FV_NAME}:{name}" for name in feature_names]
    project = f"cwbench_{uuid.uuid4().hex[:10]}"
    ts = datetime.now(timezone.utc).replace(microsecond=0)
    cleanup = redis.Redis.from_url(args.url)

    with tempfile.TemporaryDirectory(prefix="feast_peer_") as folder:
        try:
            parquet = os.path.join(folder, "users.parquet")
            frame(1, 10, feature_kinds, ts).to_parquet(parquet)
            config = RepoConfig(
                project=project,
                provider="local",
                registry=os.path.join(folder, "registry.db"),
                online_store=RedisOnlineStoreConfig(
                    connection_string=connection_string(args.url), skip_dedup=args.skip_dedup
                ),
                offline_store=DaskOfflineStoreConfig(type="file"),
                entity_key_serialization_version=3,
                repo_path=folder,
            )
            store = FeatureStore(config=config)
            user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
            source = FileSource(name="user_source", path=parquet, timestamp_field="event_timestamp")
            dtypes = {"float": Float64, "int": Int64, "string": String}
            view = FeatureView(
                name=FV_NAME,
                entities=[user],
                ttl=timedelta(days=1),
                schema=[Field(name=name, dtype=dtypes[kind]) for name, kind in zip(feature_names, feature_kinds)],
                source=source,
                online=True,
            )
            store.apply([user, view])
            log(f"feast {get_version()}, project {project}, {args.features} features: {feature_kinds}")

            # -- write_to_online_store (DataFrames built first, not timed) ---------------------------------------
            frames = [
                frame(first, min(first + args.batch - 1, args.users), feature_kinds, ts)
                for first in range(1, args.users + 1, args.batch)
            ]
            started = time.perf_counter()
            for df in frames:
                store.write_to_online_store(FV_NAME, df)
            write_seconds = time.perf_counter() - started
            del frames
            write_rate = args.users / write_seconds
            log(f"write_to_online_store: {args.users} rows in {write_seconds:.2f} s = {write_rate:,.0f} rows/s")

            # Sanity: a stored user reads back with the generator's values.
            probe = args.users // 2 + 1
            got = store.get_online_features(features=refs, entity_rows=[{"user_id": probe}]).to_dict()
            for k, (name, kind) in enumerate(zip(feature_names, feature_kinds)):
                expected = value(probe, k, kind)
                if got[name][0] != expected:
                    raise SystemExit(f"read-back mismatch for user {probe} {name}: {got[name][0]!r} != {expected!r}")

            # -- get_online_features for 1000 ids ----------------------------------------------------------------
            provider = store._get_provider()
            online_store = provider.online_store
            fv = store.get_feature_view(FV_NAME)

            def online_read(ids: list[int]) -> Any:
                keys = [EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(int64_val=i)]) for i in ids]
                return online_store.online_read(config, fv, keys, list(feature_names))

            cases: dict[str, Callable[[list[int]], Any]] = {
                "get_online_features(...).to_dict()": lambda ids: store.get_online_features(
                    features=refs, entity_rows=[{"user_id": i} for i in ids]
                ).to_dict(),
                "get_online_features(...) (OnlineResponse, no to_dict)": lambda ids: store.get_online_features(
                    features=refs, entity_rows=[{"user_id": i} for i in ids]
                ),
                "RedisOnlineStore.online_read(EntityKey protos)": online_read,
            }
            rng = random.Random(1)
            figures: dict[str, list[float]] = {name: [] for name in cases}
            names = list(cases)
            for name in names:  # warm-up (registry cache, connection)
                cases[name](rng.sample(range(1, args.users + 1), 1000))
            for r in range(args.rounds):
                ids = rng.sample(range(1, args.users + 1), 1000)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    figures[name].append(timed(functools.partial(cases[name], ids)))
            medians = {name: statistics.median(figures[name]) * 1000 for name in names}
            for name in names:
                log(f"{name:55s} {medians[name]:8.2f} ms (1000 ids, median of {args.rounds})")

            # -- one entity --------------------------------------------------------------------------------------
            one: list[float] = []
            for _ in range(args.n):
                i = rng.randint(1, args.users)
                started = time.perf_counter()
                store.get_online_features(features=refs, entity_rows=[{"user_id": i}]).to_dict()
                one.append(time.perf_counter() - started)
            one.sort()
            p50, p99 = one[len(one) // 2] * 1e6, one[int(len(one) * 0.99)] * 1e6
            log(f"get_online_features(one id).to_dict(): p50 {p50:.0f} µs, p99 {p99:.0f} µs over {args.n}")
        finally:
            deleted = delete_project_keys(cleanup, project)
            log(f"cleanup: deleted {deleted} keys matching *{project}")
            cleanup.close()

    result = {
        "feast_version": get_version(),
        "users": args.users,
        "features": args.features,
        "materialize_rows_per_s": round(write_rate),
        "get_many_1000_ms": round(medians[names[0]], 3),
        "get_many_1000_ms_no_to_dict": round(medians[names[1]], 3),
        "get_many_1000_ms_online_read": round(medians[names[2]], 3),
        "one_p50_us": round(p50, 1),
        "one_p99_us": round(p99, 1),
        "keys_deleted": deleted,
        "notes": (
            f"materialize = FeatureStore.write_to_online_store of {args.batch}-row DataFrames, DataFrame build "
            f"excluded, skip_dedup={args.skip_dedup} (default False: one HMGET pipeline of _ts then one HSET "
            "pipeline per call); get_many = get_online_features(all features, 1000 random ids).to_dict(), "
            "_no_to_dict = same returning OnlineResponse, _online_read = RedisOnlineStore.online_read with "
            "EntityKey protos built inside the timing (returns ValueProto dicts); one = get_online_features(1 id)"
            ".to_dict(). Storage: one hash per entity, key = serialized EntityKey + project, fields = "
            "mmh3('user_features:feature_k') -> serialized ValueProto, plus '_ts:user_features' Timestamp proto."
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
