"""What does a cachewise read cost on a Redis Cluster, beside one server, each against raw redis-py doing the same?

ONE process, ONE run, two topologies side by side: a single server and a cluster.  By default both are started for
this run and stopped at the end: a private embedded Valkey with a TCP port on 127.0.0.1 (TCP, not its unix socket, so
that it compares with the cluster, which is TCP; ``--unix`` uses the socket instead), and an
:class:`~cachewise.server.cluster.EmbeddedCluster` (3 primaries + 3 replicas on loopback ports, ~7 s to start).
``--url redis://host:port/db`` and ``--cluster-url redis+cluster://host:port[,host:port...]`` use servers that are
already running instead (keys get a unique ``cwcluster-…`` prefix and are deleted at the end; nothing is flushed).

Every case is timed on both topologies; on the single server the raw client is ``redis.Redis``, on the cluster
``redis.cluster.RedisCluster`` (its slot map discovered from the seeds; reads go to primaries).  Values are the
~190-byte JSON product of ``hit_path.py``; JSON is orjson on both sides (cachewise's default serializer).  What each
raw baseline does, exactly (``c`` is the raw client, every method bound once, as a tuned application would):

* **hit**: ``orjson.loads(c.get(k))``.
* **versioned hit**: a hand-written versioned cache reading what cachewise reads for a key: the entry, the
  namespace's version counter and the key's group's version counter.  On one server ``c.mget(entry, ns, group)``;
  on the cluster those three keys are in three slots, so ``c.mget_nonatomic([entry, ns, group])`` (redis-py's
  multi-slot read: a cluster pipeline of one ``MGET`` per slot, all nodes written before any reply is read).  The
  entry is stored as ``b"<ns> <group>\\n" + orjson``; the read compares that header with the counters' values
  (``head == b" ".join(values[1:])``) and ``orjson.loads`` the rest.
* **tagged hit** (2 tags, named by the reader): the same with the two tags' counters too: ``mget`` /
  ``mget_nonatomic`` of 5 keys (entry, namespace, group, tag 1, tag 2), the header holding 4 stamps.
* **miss**: ``c.get(k)`` (nil), the loader, ``orjson.dumps``, ``c.set(k, data, ex=300)``: plain cache-aside on a
  key never written before.  cachewise's miss is ``get_or_set(k, loader, ttl=300)`` on a fresh key each call, with
  single flight (the default: read, lease, write) and with ``single_flight=False`` (read, write), as in hit_path.py.
* **get_many(1000)**: ``c.mget(keys)`` (one server) / ``c.mget_nonatomic(keys)`` (cluster: ~1000 slots, so ~1000
  ``MGET`` s in one cluster pipeline) of 1000 keys, then ``orjson.loads`` of each.  cachewise's row is
  ``Cache.get_many(keys)`` when the installed cachewise has it (it has not, so far: the row then says so and only
  the raw figure is printed).
* **FeatureStore.get_many(1000)**, cachewise's batch read that exists: 1000 users × 3 features, against a redis-py
  pipeline of 1000 ``HGETALL`` (``c.pipeline(transaction=False)`` / ``RedisCluster.pipeline()``) decoded as
  features.py does (``{field.decode(): orjson.loads(v)}``, ``updated_at`` included).

cachewise's hit reads the entry and its counters in one ``MGET``, which a cluster splits into one ``MGET`` per slot
(one write per node, then the replies).  So that both sides fan out alike, every raw key of the versioned and tagged
baselines is chosen (by name) on the same primary as the cachewise key it stands for, and the run's namespace is
chosen so that a plain read's keys sit on two primaries: the entry's, and the one of the namespace's counters (they
share a slot), the general case on a cluster (2 entries in 3 on 3 primaries; chance alone would vary it from run to
run).  The **nodes** column
says how many primaries one call touches, cachewise / raw (— where it depends on the key: a miss).

Method (hit_path.py's): each case is warmed up and checked (a hit returns the stored value; a raw versioned or
tagged read found its stamps current; a miss returned the loader's value and stored it; a batch read returned every
value), then timed for N calls per round (``--many`` calls for the 1000-key reads), R rounds, round-robin over all
cases of both topologies (the starting case rotates), so that machine noise hits every case alike.  A figure is the
median over rounds of the round's mean µs per call; **× raw** is the cachewise figure over the raw figure of the same
row and topology; for the versioned and tagged rows **× GET** is the cachewise figure over the plain raw hit's (GET +
loads, the baseline hit_path.py uses for every hit).  Targets (issue 12, on the cluster): hit ≤ 1.10× raw
``RedisCluster.get`` + loads, tagged hit ≤ 1.25× (judged against both baselines: the same reads, and GET + loads);
versioned hit ≤ 1.25× and miss ≤ 1.30× are hit_path.py's budgets, FeatureStore.get_many(1000) ≤ 1.2× features.py's.

Run from the repository root: ``.venv/bin/python benchmarks/cluster.py [--quick] [--n N] [--rounds R] [--many M]
[--url URL] [--cluster-url URL] [--unix] [--pin none|same|split] [--json PATH]`` (or ``python -m
benchmarks.cluster``).  About 1.5 minutes on 2 cores; ``--quick`` is a ~15 s smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from rich.console import Console
from rich.table import Table

from cachewise import Cache
from cachewise.entries.commands import read_keys
from cachewise.features import FeatureStore
from cachewise.keyspace import KeySpace, tag_token
from cachewise.server.cluster import EmbeddedCluster
from cachewise.server.embedded import EmbeddedServer
from cachewise.transport.urls import parse_url

try:  # .venv/bin/python benchmarks/cluster.py (how the other benchmarks run: this folder is on sys.path)
    from common import cleanup_keys, describe_url, free_port, pin, server_version, version_of
    from feature_rows import kinds, row
except ImportError:  # python -m benchmarks.cluster
    from benchmarks.common import cleanup_keys, describe_url, free_port, pin, server_version, version_of
    from benchmarks.feature_rows import kinds, row

# The product of hit_path.py (~190 bytes of JSON).
VALUE: dict[str, Any] = {
    "id": 42,
    "name": "Stainless steel water bottle, 750 ml, vacuum insulated",
    "price": 9.99,
    "currency": "EUR",
    "in_stock": True,
    "tags": ["kitchen", "outdoor", "bestseller", "eco", "gift"],
    "rating": 4.6,
}
HIT_TTL = 3600  # nothing expires during a run
MISS_TTL = 300
TAGS = ("products", "featured")
BATCH = 1000  # keys of a get_many
USERS = 1000  # FeatureStore entities (one get_many reads them all)
FEATURES = 3

TARGET_HIT = 1.10  # issue 12
TARGET_TAGGED = 1.25  # issue 12
TARGET_VERSIONED = 1.25  # hit_path.py's budget
TARGET_MISS = 1.30  # hit_path.py's budget
TARGET_FEATURES = 1.20  # features.py's budget (issue #6)

WHERE = {"single": "one server", "cluster": "cluster"}

console = Console() if sys.stdout.isatty() else Console(width=170)  # no 80-column squeeze in logs


@dataclass
class Row:
    """One line of the table: what is compared, its raw baseline's description, its target."""

    name: str
    raw: str
    target: float | None = None
    source: str = ""  # whose target
    versus_get: bool = False  # also compare with the plain raw hit (versioned, tagged)
    base: str = ""  # the raw case it is compared with (default: its own name)

    @property
    def baseline(self) -> str:
        return self.base or self.name


ROWS = [
    Row("hit", "GET + loads", TARGET_HIT, "issue"),
    Row("versioned hit", "MGET entry+2 counters, check, loads", TARGET_VERSIONED, "hit_path", versus_get=True),
    Row("tagged hit (2 tags)", "MGET entry+4 counters, check, loads", TARGET_TAGGED, "issue", versus_get=True),
    Row("miss, single flight", "GET (nil) + dumps + SET EX", TARGET_MISS, "hit_path", base="miss"),
    Row("miss, single_flight=False", "GET (nil) + dumps + SET EX", TARGET_MISS, "hit_path", base="miss"),
    Row("get_many(1000)", "MGET ×1000 + loads each"),
    Row("FeatureStore.get_many(1000)", "pipeline HGETALL ×1000 + decode", TARGET_FEATURES, "features"),
]
ROW = {r.name: r for r in ROWS}


@dataclass
class Case:
    """One timed thing: ``run(n)`` makes n calls and returns the elapsed nanoseconds."""

    row: str
    where: str  # "single" | "cluster"
    who: str  # "raw" | "cachewise"
    run: Callable[[int], int]
    calls: int  # calls per timed batch
    prepare: Callable[[int], None] | None = None  # untimed, before each batch (fresh miss keys)
    check: Callable[[], str | None] | None = None  # after warm-up: None when the case does what it claims
    nodes: int = 0  # primaries one call touches (cluster)
    rounds_us: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{WHERE[self.where]}: {self.row} ({self.who})"

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds_us)

    def timed(self, n: int) -> int:
        if self.prepare is not None:
            self.prepare(n)
        gc.collect()
        return self.run(n)


# -- loops: the same shape for every case ---------------------------------------------------------------------
def loop(fn: Callable[[Any], Any], arg: Any) -> Callable[[int], int]:
    def run(n: int) -> int:
        started = time.perf_counter_ns()
        for _ in range(n):
            fn(arg)
        return time.perf_counter_ns() - started

    return run


class FreshKeys:
    """Keys never written before, n per batch (made untimed, in ``prepare``): one miss per call."""

    def __init__(self, stem: str) -> None:
        self.stem = stem
        self.batches = itertools.count()
        self.keys: list[str] = []

    def prepare(self, n: int) -> None:
        b = next(self.batches)
        self.keys = [f"{self.stem}:{b}:{i}" for i in range(n)]

    def loop(self, fn: Callable[[str], Any]) -> Callable[[int], int]:
        def run(n: int) -> int:
            batch = self.keys[:n]
            started = time.perf_counter_ns()
            for key in batch:
                fn(key)
            return time.perf_counter_ns() - started

        return run


def expect(what: str, got: Any) -> str | None:
    return None if got == VALUE else f"{what} returned {got!r:.80}, not the stored value"


def load() -> dict[str, Any]:
    return VALUE


# -- topology -------------------------------------------------------------------------------------------------
def primary_of(rc: RedisCluster, key: str) -> str:
    """The name of the primary serving ``key`` in ``rc``'s slot map."""
    return str(rc.nodes_manager.get_node_from_slot(key_slot(key.encode())).name)


class Topology:
    """One server or one cluster: its raw client, its cache, and how a multi-slot read is done on it."""

    def __init__(self, where: str, url: str, raw: Any, prefix: str) -> None:
        self.where = where
        self.url = url
        self.raw = raw
        self.cluster = isinstance(raw, RedisCluster)
        self.prefix = prefix
        self.cache = Cache(url, namespace=prefix)
        # the multi-key read a hand-written cache would use on this client
        self.mget: Callable[[list[str]], list[Any]] = raw.mget_nonatomic if self.cluster else raw.mget

    def node(self, key: str) -> str:
        """The primary serving ``key`` (one name for the single server)."""
        return primary_of(self.raw, key) if self.cluster else "single"

    def nodes(self, keys: list[str]) -> int:
        return len({self.node(k) for k in keys})

    def write_many(self, pairs: dict[str, bytes], ttl: int) -> None:
        pipe = self.raw.pipeline() if self.cluster else self.raw.pipeline(transaction=False)
        for key, value in pairs.items():
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def close(self) -> None:
        self.cache.close()
        self.raw.close()


def node_matched(topo: Topology | None, stem: str, like: list[str]) -> list[str]:
    """A raw key for each key of ``like`` (cachewise's), named ``stem:…``, on the same primary as it (cluster)."""
    out: list[str] = []
    slots: set[int] = set()
    for i, cw_key in enumerate(like):
        want = topo.node(cw_key) if topo is not None else None
        for j in itertools.count():
            name = f"{stem}:{i}:{j}"
            slot = key_slot(name.encode())
            if slot in slots or (topo is not None and topo.node(name) != want):
                continue
            slots.add(slot)
            out.append(name)
            break
    return out


def spread_prefix(rc: RedisCluster, tries: int = 20000) -> tuple[str, bool]:
    """A run prefix whose plain and versioned reads touch two primaries: the entry's, and the one holding the
    namespace's counters (which share a slot), the general case on a cluster (2 keys in 3 on 3 primaries); see the
    module docstring.  ``(prefix, spread)``, spread False when no such prefix was found (one primary)."""
    for _ in range(tries):
        prefix = f"cwcluster-{uuid.uuid4().hex[:10]}"
        space = KeySpace(prefix)
        reads = [read_keys(space, k) for k in ("item:42", "product:42", "product:43")]
        if all(len({primary_of(rc, k) for k in keys}) == 2 for keys in reads):
            return prefix, True
    return prefix, False


# -- the benchmark --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, n: int, many: int, rounds: int) -> None:
        self.n = n
        self.many = many
        self.rounds = rounds
        self.warmup = max(200, n // 10)
        self.warmup_many = max(3, many // 10)
        self.cases: list[Case] = []
        self.skipped: dict[str, str] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []

    def add(self, case: Case) -> None:
        self.cases.append(case)

    def setup(self, topo: Topology, like: Topology | None) -> None:
        """Every case of one topology (``like``: the cluster, whose primaries the raw keys are matched to)."""
        self.setup_hits(topo, like)
        self.setup_misses(topo)
        self.setup_many(topo)
        self.setup_features(topo)

    # -- hits -----------------------------------------------------------------------------------------------------
    def setup_hits(self, topo: Topology, like: Topology | None) -> None:
        cache, raw, where, space = topo.cache, topo.raw, topo.where, topo.cache.keyspace
        # As hit_path.py: bump_version() only increments counters that exist, so write once, bump the "product"
        # group and the namespace, then write the values read below.
        cache.set("product:0", VALUE, ttl=HIT_TTL)
        cache.bump_version("product")
        cache.bump_version()
        cache.set("item:42", VALUE, ttl=HIT_TTL)  # plain
        cache.set("product:42", VALUE, ttl=HIT_TTL)  # versioned (its group was bumped)
        cache.set("product:43", VALUE, ttl=HIT_TTL, tags=TAGS)  # tagged
        tokens = tuple(tag_token(t) for t in TAGS)
        cw_plain = read_keys(space, "item:42")
        cw_versioned = read_keys(space, "product:42")
        cw_tagged = read_keys(space, "product:43", tokens)
        counters = [raw.get(k) for k in cw_tagged[1:]]
        if any(c is None for c in counters):
            raise RuntimeError(f"cachewise did not create its counters {cw_tagged[1:]}: {counters}")

        stem = f"{topo.prefix}-raw"
        plain_key = node_matched(like, f"{stem}:plain", cw_plain[:1])[0]
        versioned = node_matched(like, f"{stem}:versioned", cw_versioned)
        tagged = node_matched(like, f"{stem}:tagged", cw_tagged)
        raw.set(plain_key, orjson.dumps(VALUE), ex=HIT_TTL)
        for keys in (versioned, tagged):
            stamps = [str(1_000_000 + i).encode() for i in range(1, len(keys))]
            topo.write_many(dict(zip(keys[1:], stamps)), HIT_TTL)
            raw.set(keys[0], b" ".join(stamps) + b"\n" + orjson.dumps(VALUE), ex=HIT_TTL)

        loads, get, mget = orjson.loads, raw.get, topo.mget

        def raw_hit(k: str) -> Any:
            return loads(get(k))

        def raw_stamped(keys: list[str]) -> Any:
            # A hand-written versioned/tagged cache: the entry and its counters in one read, stamps compared.
            values = mget(keys)
            entry = values[0]
            if entry is None:
                return None
            head, _, body = entry.partition(b"\n")
            if None in values or head != b" ".join(values[1:]):
                return None  # stale: a counter moved
            return loads(body)

        get_tagged = lambda k: cache.get(k, tags=TAGS)  # noqa: E731
        n = self.n
        for name, raw_case, cw_case in (
            ("hit", (raw_hit, plain_key, 1), (cache.get, "item:42", cw_plain)),
            ("versioned hit", (raw_stamped, versioned, topo.nodes(versioned)), (cache.get, "product:42", cw_versioned)),
            ("tagged hit (2 tags)", (raw_stamped, tagged, topo.nodes(tagged)), (get_tagged, "product:43", cw_tagged)),
        ):
            rfn, rarg, rnodes = raw_case
            cfn, carg, ckeys = cw_case
            self.add(
                Case(
                    name,
                    where,
                    "raw",
                    loop(rfn, rarg),
                    n,
                    check=lambda f=rfn, a=rarg: expect("the raw read", f(a)),  # type: ignore[misc]
                    nodes=rnodes,
                )
            )
            self.add(
                Case(
                    name,
                    where,
                    "cachewise",
                    loop(cfn, carg),
                    n,
                    check=lambda f=cfn, a=carg: expect("cachewise", f(a)),  # type: ignore[misc]
                    nodes=topo.nodes(ckeys),
                )
            )

    # -- misses ---------------------------------------------------------------------------------------------------
    def setup_misses(self, topo: Topology) -> None:
        cache, raw, where = topo.cache, topo.raw, topo.where
        loads, dumps, get, set_ = orjson.loads, orjson.dumps, raw.get, raw.set
        get_or_set = cache.get_or_set

        def raw_miss(k: str) -> Any:
            data = get(k)
            if data is not None:
                return loads(data)
            value = load()
            set_(k, dumps(value), ex=MISS_TTL)
            return value

        def cw_miss(k: str) -> Any:
            return get_or_set(k, load, ttl=MISS_TTL)

        def cw_plain_miss(k: str) -> Any:
            return get_or_set(k, load, ttl=MISS_TTL, single_flight=False)

        raw_keys = FreshKeys(f"{topo.prefix}-raw:miss")
        cw_keys = FreshKeys("miss")
        cw_plain_keys = FreshKeys("pmiss")

        def stored_raw() -> str | None:
            k = f"{topo.prefix}-raw:miss-check"
            return expect("the raw miss", raw_miss(k)) or expect("a read after the raw miss", loads(get(k)))

        def stored_cw(fn: Callable[[str], Any], k: str) -> str | None:
            before = cache.stats().total.misses
            problem = expect("get_or_set", fn(k)) or expect("a get after get_or_set", cache.get(k))
            if problem is None and cache.stats().total.misses != before + 1:
                return "get_or_set on a fresh key was not counted as one miss"
            return problem

        raw_case = Case("miss", where, "raw", raw_keys.loop(raw_miss), self.n, raw_keys.prepare, stored_raw, nodes=1)
        self.add(raw_case)  # the baseline of both cachewise misses
        self.add(
            Case(
                "miss, single flight",
                where,
                "cachewise",
                cw_keys.loop(cw_miss),
                self.n,
                prepare=cw_keys.prepare,
                check=lambda: stored_cw(cw_miss, "miss-check"),
            )
        )
        self.add(
            Case(
                "miss, single_flight=False",
                where,
                "cachewise",
                cw_plain_keys.loop(cw_plain_miss),
                self.n,
                prepare=cw_plain_keys.prepare,
                check=lambda: stored_cw(cw_plain_miss, "pmiss-check"),
            )
        )

    # -- batch reads ----------------------------------------------------------------------------------------------
    def setup_many(self, topo: Topology) -> None:
        cache, where = topo.cache, topo.where
        raw_keys = [f"{topo.prefix}-raw:many:{i}" for i in range(BATCH)]
        data = orjson.dumps(VALUE)
        topo.write_many(dict.fromkeys(raw_keys, data), HIT_TTL)
        loads, mget = orjson.loads, topo.mget

        def raw_many(keys: list[str]) -> list[Any]:
            return [None if v is None else loads(v) for v in mget(keys)]

        want = [VALUE] * BATCH
        self.add(
            Case(
                "get_many(1000)",
                where,
                "raw",
                loop(raw_many, raw_keys),
                self.many,
                check=lambda: None if raw_many(raw_keys) == want else "the raw MGET did not return every value",
                nodes=topo.nodes(raw_keys),
            )
        )
        get_many = getattr(cache, "get_many", None)
        if get_many is None:
            self.skipped["get_many(1000)"] = (
                "cachewise.Cache has no get_many() yet (its one batch read is FeatureStore.get_many, next row): "
                "the raw figure alone is printed"
            )
            return
        cw_keys = [f"many:{i}" for i in range(BATCH)]
        for key in cw_keys:
            cache.set(key, VALUE, ttl=HIT_TTL)

        def check() -> str | None:
            got = get_many(cw_keys)
            values = [got.get(k) for k in cw_keys] if isinstance(got, dict) else list(got)
            return None if values == want else "Cache.get_many did not return every value"

        self.add(Case("get_many(1000)", where, "cachewise", loop(get_many, cw_keys), self.many, check=check))

    def setup_features(self, topo: Topology) -> None:
        cache, raw, where = topo.cache, topo.raw, topo.where
        store = FeatureStore(cache, entity="user", ttl=HIT_TTL)
        feature_kinds = kinds(FEATURES)
        summary = store.materialize(row(i, feature_kinds) for i in range(1, USERS + 1))
        if summary.rows != USERS:
            raise RuntimeError(f"FeatureStore.materialize wrote {summary.rows} of {USERS} users")
        ids = list(range(1, USERS + 1))
        keys = [store.key(i) for i in ids]
        loads = orjson.loads
        cluster = topo.cluster

        def raw_pipeline(keys: list[str]) -> list[Any]:
            pipe = raw.pipeline() if cluster else raw.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return [{k.decode(): loads(v) for k, v in r.items()} or None for r in pipe.execute()]

        def check_raw() -> str | None:
            got = raw_pipeline(keys)
            return None if all(got) else "the raw pipeline did not find every user"

        def check_cw() -> str | None:
            got = store.get_many(ids)
            stored = [{k: v for k, v in r.items() if k != "updated_at"} for r in raw_pipeline(keys)]
            return None if got == stored else "FeatureStore.get_many did not return what the server holds"

        # What was stored must be each user's own row (this is about materialize, not about the reads timed here:
        # every hash has the same fields and sizes, so a wrong value does not change what a read costs).
        held = {i: {k: v for k, v in (r or {}).items() if k != "updated_at"} for i, r in zip(ids, raw_pipeline(keys))}
        wrong = [i for i in ids if held[i] != {k: v for k, v in row(i, feature_kinds).items() if k != "user_id"}]
        if wrong:
            self.warnings.append(
                f"{WHERE[where]}: FeatureStore.materialize stored {len(wrong)} of {USERS} users with features that "
                f"are not theirs (user {wrong[0]} holds {held[wrong[0]]}); the read timings stand"
            )

        name = "FeatureStore.get_many(1000)"
        nodes = topo.nodes(keys)
        self.add(Case(name, where, "raw", loop(raw_pipeline, keys), self.many, check=check_raw, nodes=nodes))
        self.add(Case(name, where, "cachewise", loop(store.get_many, ids), self.many, check=check_cw, nodes=nodes))

    # -- running --------------------------------------------------------------------------------------------------
    def verify(self) -> None:
        """Warm every case up, then check it does what its name says; a broken case is dropped (and said so)."""
        for case in self.cases:
            case.timed(self.warmup if case.calls == self.n else self.warmup_many)
        broken = {}
        for case in self.cases:
            if case.check is not None and (problem := case.check()):
                broken[case.name] = problem
        for name, problem in broken.items():
            self.skipped[name] = f"BROKEN, not timed: {problem}"
        self.cases = [c for c in self.cases if c.name not in broken]

    def measure(self) -> None:
        count = len(self.cases)
        for r in range(self.rounds):
            started = time.perf_counter()
            for case in self.cases[r % count :] + self.cases[: r % count]:
                case.rounds_us.append(case.timed(case.calls) / case.calls / 1000)
            console.print(f"  round {r + 1}/{self.rounds} done ({time.perf_counter() - started:.1f} s)", style="dim")


# -- report ---------------------------------------------------------------------------------------------------
def results(bench: Bench) -> list[dict[str, Any]]:
    """One dict per (row, topology): both figures, the ratios, the verdicts."""
    by = {(c.row, c.where, c.who): c for c in bench.cases}
    out = []
    for spec in ROWS:
        for where in WHERE:
            rc, cc = by.get((spec.baseline, where, "raw")), by.get((spec.name, where, "cachewise"))
            if rc is None and cc is None:
                continue
            get = by.get(("hit", where, "raw"))
            ratio = cc.median_us / rc.median_us if cc and rc else None
            paired = (
                statistics.median(c / r for c, r in zip(cc.rounds_us, rc.rounds_us)) if cc and rc else None
            )  # the same ratio within each round (both timed seconds apart): written to the JSON only
            vs_get = cc.median_us / get.median_us if spec.versus_get and cc and get else None
            target = spec.target
            met = None if ratio is None or target is None else ratio <= target
            met_get = None if vs_get is None or target is None else vs_get <= target
            out.append(
                {
                    "case": f"{WHERE[where]}: {spec.name}",
                    "row": spec.name,
                    "where": where,
                    "raw_does": spec.raw,
                    "raw_us": rc.median_us if rc else None,
                    "raw_rounds_us": rc.rounds_us if rc else [],
                    "median_us": cc.median_us if cc else None,
                    "rounds_us": cc.rounds_us if cc else [],
                    "added_us": cc.median_us - rc.median_us if cc and rc else None,
                    "ratio": ratio,
                    "paired_ratio": paired,
                    "ratio_vs_get": vs_get,
                    "nodes": (cc.nodes if cc else 0, rc.nodes if rc else 0),
                    "target": target,
                    "target_source": spec.source,
                    "met": met,
                    "met_vs_get": met_get,
                }
            )
    return out


def verdict(met: bool | None) -> str:
    return {None: "", True: "[green]met[/green]", False: "[bold red]MISSED[/bold red]"}[met]


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("case")
    table.add_column("server")
    table.add_column("raw µs", justify="right")
    table.add_column("cachewise µs", justify="right")
    table.add_column("+µs", justify="right")
    table.add_column("× raw", justify="right")
    table.add_column("× GET", justify="right")
    table.add_column("nodes cw/raw", justify="right", style="dim")
    table.add_column("target", justify="right")
    table.add_column("met? (× raw / × GET)")
    by = {(r["row"], r["where"]): r for r in rows}
    for i, spec in enumerate(ROWS):
        if i:
            table.add_section()
        for where in WHERE:
            r = by.get((spec.name, where))
            if r is None:
                continue
            cluster = where == "cluster"
            cw_nodes, raw_nodes = r["nodes"]
            met = ""
            if cluster:
                met = verdict(r["met"])
                if spec.versus_get and r["met_vs_get"] is not None:
                    met += " / " + verdict(r["met_vs_get"])
            table.add_row(
                spec.name if where == "single" else "",
                WHERE[where],
                "" if r["raw_us"] is None else f"{r['raw_us']:.1f}",
                "—" if r["median_us"] is None else f"{r['median_us']:.1f}",
                "" if r["added_us"] is None else f"{r['added_us']:+.1f}",
                "" if r["ratio"] is None else f"{r['ratio']:.2f}×",
                "" if r["ratio_vs_get"] is None else f"{r['ratio_vs_get']:.2f}×",
                f"{cw_nodes or '—'}/{raw_nodes or '—'}" if cluster else "",
                "" if spec.target is None or not cluster else f"≤ {spec.target:.2f}× ({spec.source})",
                met,
            )
    console.print(table)
    console.print("raw baselines (see the docstring for exactly what each does):", style="dim")
    for spec in ROWS:
        base = f" (the raw case of {spec.baseline!r})" if spec.base else ""
        console.print(f"  {spec.name}: {spec.raw}{base}", style="dim")


# -- servers --------------------------------------------------------------------------------------------------
def cluster_client(url: str) -> RedisCluster:
    address = parse_url(url)
    nodes = [ClusterNode(host, port) for host, port in address.seeds]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, require_full_coverage=False, **address.params)


def cleanup_cluster(rc: RedisCluster, prefix: str) -> int:
    """Delete every key of this run from a cluster we did not start: SCAN each primary, UNLINK key by key (the keys
    of one node span slots)."""
    removed = 0
    for node in rc.get_primaries():  # type: ignore[no-untyped-call]
        client = rc.get_redis_connection(node)
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            pipe.unlink(key)
        removed += sum(pipe.execute())
    return removed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="calls per hit/miss case per round (default 2000)")
    parser.add_argument("--many", type=int, default=None, help="calls per 1000-key case per round (default 15)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run (~15 s): N=400, 4 batch reads, 3 rounds")
    parser.add_argument(
        "--url", help="single server to use (redis://, rediss:// or unix://) instead of an embedded one"
    )
    parser.add_argument(
        "--cluster-url", help="cluster to use (redis+cluster://host:port[,host:port...]) instead of an embedded one"
    )
    parser.add_argument("--unix", action="store_true", help="embedded single server over its unix socket, not TCP")
    parser.add_argument(
        "--pin",
        choices=("none", "same", "split"),
        default="none",
        help="embedded servers only (Linux): this process and every server (the single one, every cluster node) on "
        "one CPU, or on two; 'none' (default) leaves placement to the scheduler",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw numbers to PATH")
    args = parser.parse_args(argv)
    args.n = args.n or (400 if args.quick else 2000)
    args.many = args.many or (4 if args.quick else 15)
    args.rounds = args.rounds or (3 if args.quick else 7)
    if min(args.n, args.many, args.rounds) < 1:
        parser.error("--n, --many and --rounds must be >= 1")
    if args.url and args.unix:
        parser.error("--unix is for the embedded server; give a unix:// --url instead")
    if args.cluster_url and not parse_url(args.cluster_url).cluster:
        parser.error("--cluster-url must be a redis+cluster:// or rediss+cluster:// URL")
    if args.pin != "none" and (args.url or args.cluster_url):
        parser.error("--pin needs the embedded servers (no --url / --cluster-url)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    bench = Bench(args.n, args.many, args.rounds)
    with contextlib.ExitStack() as stack:
        # -- servers (each stopped by the stack, whatever happens) --
        single: EmbeddedServer | None = None
        if args.url:
            url, transport = args.url, describe_url(args.url)
        elif args.unix:
            single = stack.enter_context(EmbeddedServer())
            url, transport = single.url, f"unix socket {single.socket_path} (embedded, started for this run)"
        else:
            port = free_port()
            single = stack.enter_context(EmbeddedServer(port=port))
            url, transport = f"redis://127.0.0.1:{port}/0", f"tcp 127.0.0.1:{port} (embedded, started for this run)"
        cluster: EmbeddedCluster | None = None
        if args.cluster_url:
            cluster_url, cluster_transport = args.cluster_url, "external cluster"
        else:
            console.print("starting the embedded cluster (3 primaries + 3 replicas)…", style="dim")
            cluster = stack.enter_context(EmbeddedCluster())
            cluster_url, cluster_transport = cluster.url, "tcp 127.0.0.1 (embedded, 3+3 nodes, started for this run)"
        placement = "left to the scheduler (see --pin)"
        if args.pin != "none":
            for server in [single, *(cluster.nodes if cluster else [])]:
                placement = pin(server, args.pin)
        version = server_version(url)
        seed_host, seed_port = parse_url(cluster_url).seeds[0]
        cluster_version = server_version(f"redis://{seed_host}:{seed_port}")

        # -- clients --
        rc = cluster_client(cluster_url)
        stack.callback(rc.close)
        prefix, spread = spread_prefix(rc)
        one = Topology("single", url, redis.Redis.from_url(url), prefix)
        stack.callback(one.close)
        many = Topology("cluster", cluster_url, cluster_client(cluster_url), prefix)
        stack.callback(many.close)
        primaries = len(rc.get_primaries())  # type: ignore[no-untyped-call]
        if args.url:
            stack.callback(lambda: console.print(f"deleted {cleanup_keys(url, prefix)} keys from {url}", style="dim"))
        if args.cluster_url:
            stack.callback(
                lambda: console.print(f"deleted {cleanup_cluster(rc, prefix)} keys from the cluster", style="dim")
            )
        console.print(f"[bold]one server[/bold]: {version}, {transport}")
        console.print(
            f"[bold]cluster[/bold]: {cluster_version}, {primaries} primaries, {cluster_transport}; "
            f"namespace {prefix!r}" + (" (a plain read spans 2 primaries)" if spread else "")
        )
        console.print(f"CPU placement: {placement}", style="dim")
        console.print(
            f"python {platform.python_version()}, redis-py {version_of('redis')}, hiredis {version_of('hiredis')}, "
            f"orjson {version_of('orjson')}, cachewise {version_of('cachewise')}",
            style="dim",
        )

        # -- cases, checks, timing --
        console.print("writing the values…", style="dim")
        bench.setup(one, many)
        bench.setup(many, many)
        console.print(f"warming up and checking {len(bench.cases)} cases…", style="dim")
        bench.verify()
        console.print(
            f"timing {len(bench.cases)} cases × {bench.rounds} rounds ({bench.n} calls; {bench.many} for the "
            "1000-key reads), round-robin over both topologies…",
            style="dim",
        )
        bench.measure()
        for topo in (one, many):
            bench.stats[topo.where] = topo.cache.stats().total.as_dict()

    rows = results(bench)
    print_table(rows, f"cachewise on one server vs on a cluster, each × raw redis-py: median of {args.rounds} rounds")
    for name, reason in bench.skipped.items():
        console.print(f"  {name}: skipped: {reason}", style="yellow")
    for warning in bench.warnings:
        console.print(f"  warning: {warning}", style="bold yellow")
    suspect = False
    for where, stats in bench.stats.items():
        console.print(
            f"cachewise counters ({WHERE[where]}): hits={stats['hits']} misses={stats['misses']} "
            f"errors={stats['errors']} invalid={stats['invalid']} sets={stats['sets']}",
            style="dim",
        )
        suspect = suspect or bool(stats["errors"] or stats["invalid"])
    if suspect:
        console.print("[bold red]cachewise counted server errors or invalid entries: the figures are suspect[/]")
    cluster_rows = [r for r in rows if r["where"] == "cluster"]
    verdicts = [r["met"] for r in cluster_rows] + [r["met_vs_get"] for r in cluster_rows]
    missed = [r["case"] for r in cluster_rows if r["met"] is False] + [
        f"{r['case']} (× GET)" for r in cluster_rows if r["met_vs_get"] is False
    ]
    console.print(
        f"cluster targets: {sum(v is True for v in verdicts)} met, {len(missed)} missed"
        + (f" ({', '.join(missed)})" if missed else "")
        + f"; {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        doc = {
            "server": version,
            "cluster": cluster_version,
            "transport": transport,
            "cluster_transport": cluster_transport,
            "cpu_placement": placement,
            "n": args.n,
            "many": args.many,
            "rounds": args.rounds,
            "python": sys.version,
            "platform": platform.platform(),
            "versions": {d: version_of(d) for d in ("cachewise", "redis", "hiredis", "orjson")},
            "cases": rows,
            "skipped": bench.skipped,
            "cachewise_stats": bench.stats,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
        console.print(f"raw numbers written to {args.json}", style="dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
