"""What does a cachewise rate-limit hit cost, beside one raw INCR and beside the `limits` library, and how exact is it
under 4 processes?

Part 1, cost (one process): the median µs per call of ``RateLimiter.hit()`` for each algorithm (fixed window,
sliding window, token bucket), of a hit on two limits at once, and of ``ahit()``; beside one raw redis-py ``INCR``
(the seed's limiter without its ``EXPIRE``: the floor of any counter on the server) and beside the `limits` library's
fixed window, moving window and sliding window counter strategies (``limits.storage.RedisStorage``, the same server).
Every call is an *allowed* hit (identities rotate over 1000 names, with a limit no identity reaches), so that each
one does its full work, writes included.  Rounds are round-robin over the cases; the figure is the median over rounds
of the round's mean.  Target (issue #5): every cachewise algorithm's sync ``hit()`` ≤ 1.10× a raw INCR.

Part 2, accuracy (4 spawned processes): every process hammers ONE identity per strategy, round-robin over the six
strategies, for ``--duration`` seconds, limit 100 per 2 s (token bucket: burst 100).  Each allowed hit is recorded
with the wall-clock time it was sent and answered (the server is on this machine: same clock as its ``TIME``).

Run from the repository root: ``.venv/bin/python benchmarks/ratelimit.py [--quick] [--n N] [--rounds R]
[--duration S] [--url URL] [--pin none|same|split] [--no-limits] [--json PATH]``.  By default a private embedded
Valkey is started with a TCP port on 127.0.0.1 (every client uses TCP) and stopped at the end; ``--url`` uses another
server (keys get a unique prefix and are deleted at the end; nothing is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from rich.console import Console
from rich.table import Table

from cachewise import Cache
from cachewise.ratelimit import Limit, RateLimiter
from cachewise.server.embedded import EmbeddedServer
from common import cleanup_keys, close_all, describe_url, pin, server_version, start_tcp_server, version_of

TARGET = 1.10
IDENTITIES = 1000
HUGE = 10**9  # a limit no identity reaches during the timing part: every timed hit is allowed
LIMIT, PERIOD = 100, 2  # the accuracy part: 100 per 2 s
PROCESSES = 4
ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
LIMITS_STRATEGIES = {
    "fixed": "FixedWindowRateLimiter",
    "moving": "MovingWindowRateLimiter",
    "sliding_counter": "SlidingWindowCounterRateLimiter",
}

FLOOR_SCRIPT = (
    "local t = redis.call('TIME') local v = redis.pcall('GET', KEYS[1]) "
    "redis.call('SET', KEYS[1], t[1] .. t[2], 'PX', 3600000) return 1"
)

console = Console() if sys.stdout.isatty() else Console(width=160)


@dataclass
class Case:
    name: str
    section: str  # "sync" or "async"
    baseline: str | None
    target: float | None = None
    run: Callable[[int], int] | None = None
    arun: Callable[[int], Awaitable[int]] | None = None
    check: Callable[[], str | None] | None = None
    rounds_us: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds_us)

    async def timed(self, n: int) -> int:
        gc.collect()
        if self.run is not None:
            return self.run(n)
        assert self.arun is not None
        return await self.arun(n)


def sync_loop(fn: Callable[[str], Any], names: list[str]) -> Callable[[int], int]:
    """n calls, rotating over ``names``; returns the elapsed ns."""
    state = [0]
    count = len(names)

    def run(n: int) -> int:
        i = state[0]
        started = time.perf_counter_ns()
        for _ in range(n):
            fn(names[i])
            i += 1
            if i == count:
                i = 0
        elapsed = time.perf_counter_ns() - started
        state[0] = i
        return elapsed

    return run


def async_loop(fn: Callable[[str], Awaitable[Any]], names: list[str]) -> Callable[[int], Awaitable[int]]:
    state = [0]
    count = len(names)

    async def run(n: int) -> int:
        i = state[0]
        started = time.perf_counter_ns()
        for _ in range(n):
            await fn(names[i])
            i += 1
            if i == count:
                i = 0
        elapsed = time.perf_counter_ns() - started
        state[0] = i
        return elapsed

    return run


def limits_strategy(url: str, prefix: str, kind: str) -> Any:
    """A `limits` strategy object on ``url`` (raises ImportError when the library is missing)."""
    import limits.strategies
    from limits.storage import RedisStorage

    storage = RedisStorage(url, key_prefix=f"{prefix}-{kind}")  # the strategies would share keys of other types
    return getattr(limits.strategies, LIMITS_STRATEGIES[kind])(storage)


# -- part 1: cost per call ------------------------------------------------------------------------------------------
class CostBench:
    def __init__(self, url: str, prefix: str, n: int, rounds: int, with_limits: bool) -> None:
        self.url, self.prefix, self.n, self.rounds, self.with_limits = url, prefix, n, rounds, with_limits
        self.names = [f"{prefix}-user-{i}" for i in range(IDENTITIES)]
        self.cases: list[Case] = []
        self.skipped: dict[str, str] = {}
        self.closers: list[Callable[[], Any]] = []
        self.cache: Cache | None = None

    async def setup(self) -> None:
        r = redis.Redis.from_url(self.url)
        ar = redis.asyncio.Redis.from_url(self.url)
        self.closers += [r.close, ar.aclose]
        incr, aincr = r.incr, ar.incr
        raw_keys = {name: f"{self.prefix}:raw:{name}" for name in self.names}

        def raw_incr(name: str) -> Any:
            return incr(raw_keys[name])

        async def raw_aincr(name: str) -> Any:
            return await aincr(raw_keys[name])

        self.cases.append(Case("raw INCR (redis-py)", "sync", None, run=sync_loop(raw_incr, self.names)))
        # The least any limiter on the server's clock does: a script that reads TIME, GETs the state and SETs it with
        # a TTL, with no logic at all.  No target: it shows what part of the cost is the server's work.
        floor_sha = r.script_load(FLOOR_SCRIPT)
        evalsha = r.evalsha
        floor_keys = {name: f"{self.prefix}:floor:{name}" for name in self.names}

        def floor(name: str) -> Any:
            return evalsha(floor_sha, 1, floor_keys[name])

        self.cases.append(
            Case(
                "floor: EVALSHA of TIME + GET + SET PX", "sync", "raw INCR (redis-py)", run=sync_loop(floor, self.names)
            )
        )
        self.cases.append(Case("raw INCR (redis.asyncio)", "async", None, arun=async_loop(raw_aincr, self.names)))

        cache = self.cache = Cache(self.url, namespace=self.prefix)
        self.closers.append(cache.close)
        for algorithm in ALGORITHMS:
            limiter = RateLimiter(cache, HUGE, 3600, algorithm=algorithm, name="cost")
            self.cases.append(
                Case(
                    f"cachewise hit() {algorithm}",
                    "sync",
                    "raw INCR (redis-py)",
                    TARGET,
                    run=sync_loop(limiter.hit, self.names),
                    check=self._checker(limiter),
                )
            )
        both = RateLimiter(cache, limits=[Limit(HUGE, 3600), Limit(HUGE, 86400, "fixed_window")], name="cost2")
        self.cases.append(
            Case(
                "cachewise hit() 2 limits (tb + fw)",
                "sync",
                "raw INCR (redis-py)",
                run=sync_loop(both.hit, self.names),
                check=self._checker(both),
            )
        )
        for algorithm in ALGORITHMS:
            limiter = RateLimiter(cache, HUGE, 3600, algorithm=algorithm, name="acost")
            self.cases.append(
                Case(
                    f"cachewise ahit() {algorithm}",
                    "async",
                    "raw INCR (redis.asyncio)",
                    arun=async_loop(limiter.ahit, self.names),
                    check=self._checker(limiter),
                )
            )
        if self.with_limits:
            self._setup_limits()

    def _checker(self, limiter: RateLimiter) -> Callable[[], str | None]:
        def check() -> str | None:
            decision = limiter.peek(self.names[0])
            if not decision.allowed or decision.degraded:
                return f"a hit was not allowed (or degraded): {decision}"
            return None

        return check

    def _setup_limits(self) -> None:
        try:
            from limits import RateLimitItemPerHour
        except ImportError as exc:
            self.skipped["limits"] = f"cannot import limits ({exc}); pip install 'limits[redis]'"
            return
        item = RateLimitItemPerHour(HUGE)
        for kind in LIMITS_STRATEGIES:
            try:
                strategy = limits_strategy(self.url, self.prefix, kind)
            except Exception as exc:
                self.skipped[f"limits {kind}"] = f"{type(exc).__name__}: {exc}"
                continue
            self.closers.append(strategy.storage.storage.close)

            def hit(name: str, strategy: Any = strategy) -> bool:
                return bool(strategy.hit(item, name))

            def check(strategy: Any = strategy) -> str | None:
                return None if strategy.test(item, self.names[0]) else "a hit was refused"

            self.cases.append(
                Case(
                    f"limits {LIMITS_STRATEGIES[kind]}",
                    "sync",
                    "raw INCR (redis-py)",
                    run=sync_loop(hit, self.names),
                    check=check,
                )
            )

    async def run(self) -> None:
        warmup = max(IDENTITIES, self.n // 4)
        for case in self.cases:
            await case.timed(warmup)
        for case in list(self.cases):
            problem = case.check() if case.check is not None else None
            if problem:
                self.skipped[case.name] = f"BROKEN, not timed: {problem}"
                self.cases.remove(case)
        count = len(self.cases)
        for r in range(self.rounds):
            for case in self.cases[r % count :] + self.cases[: r % count]:
                case.rounds_us.append(await case.timed(self.n) / self.n / 1000)
            console.print(f"  round {r + 1}/{self.rounds} done", style="dim")

    async def close(self) -> None:
        await close_all(self.closers)


def cost_rows(bench: CostBench) -> list[dict[str, Any]]:
    by_name = {c.name: c for c in bench.cases}
    rows = []
    for case in bench.cases:
        base = by_name.get(case.baseline) if case.baseline else None
        ratio = case.median_us / base.median_us if base is not None else None
        rows.append(
            {
                "case": case.name,
                "section": case.section,
                "median_us": case.median_us,
                "min_us": min(case.rounds_us),
                "max_us": max(case.rounds_us),
                "rounds_us": case.rounds_us,
                "added_us": case.median_us - base.median_us if base is not None else None,
                "ratio": ratio,
                "paired_ratio": (
                    statistics.median(c / b for c, b in zip(case.rounds_us, base.rounds_us)) if base else None
                ),
                "target": case.target,
                "met": None if ratio is None or case.target is None else ratio <= case.target,
            }
        )
    return rows


def print_cost(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("case", "left"),
        ("µs/call", "right"),
        ("rounds min–max", "right"),
        ("+µs vs raw", "right"),
        ("× raw INCR", "right"),
        ("target", "right"),
        ("met?", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, section in enumerate(("sync", "async")):
        if i:
            table.add_section()
        table.add_row(f"[bold]{section}[/bold]")
        for row in (r for r in rows if r["section"] == section):
            table.add_row(
                "  " + row["case"],
                f"{row['median_us']:.1f}",
                f"{row['min_us']:.1f}–{row['max_us']:.1f}",
                "" if row["added_us"] is None else f"{row['added_us']:+.1f}",
                "baseline" if row["ratio"] is None else f"{row['ratio']:.2f}×",
                "—" if row["target"] is None else f"≤ {row['target']:.2f}×",
                {None: "", True: "[green]met[/green]", False: "[bold red]MISSED[/bold red]"}[row["met"]],
            )
    console.print(table)


# -- part 2: accuracy under 4 processes -----------------------------------------------------------------------------
def hammer(url: str, prefix: str, start_at: float, duration: float, with_limits: bool, out: Any) -> None:
    """One worker process: round-robin over the strategies on one identity each until the deadline; report every
    allowed hit as (strategy, sent, answered, extra) and the count of refused ones.  ``extra``: for cachewise's fixed
    window, the window's end (sent + reset_after: which window the server counted the hit in); for its token bucket,
    the remaining it reported."""
    cache = Cache(url, namespace=prefix, timeout=2.0)
    hitters: dict[str, Callable[[], tuple[bool, float | None]]] = {}
    warmers: list[Callable[[], Any]] = []
    for algorithm in ALGORITHMS:
        limiter = RateLimiter(cache, LIMIT, PERIOD, algorithm=algorithm, name="acc")

        def ours(limiter: RateLimiter = limiter, algorithm: str = algorithm) -> tuple[bool, float | None]:
            decision = limiter.hit("one-identity")
            if decision.degraded:
                raise RuntimeError(f"degraded decision: {decision}")
            if algorithm == "fixed_window":
                return decision.allowed, decision.reset_after
            return decision.allowed, float(decision.remaining) if algorithm == "token_bucket" else None

        hitters[f"cachewise {algorithm}"] = ours
        warmers.append(functools.partial(limiter.peek, "warm-up"))
    if with_limits:
        from limits import RateLimitItemPerSecond

        item = RateLimitItemPerSecond(LIMIT, PERIOD)
        for kind in LIMITS_STRATEGIES:
            strategy = limits_strategy(url, prefix, kind)

            def theirs(strategy: Any = strategy) -> tuple[bool, float | None]:
                return bool(strategy.hit(item, "one-identity")), None

            hitters[f"limits {kind}"] = theirs
            warmers.append(functools.partial(strategy.test, item, "warm-up"))
    for warm in warmers:  # connect and load the scripts before the start, without counting anything
        warm()
    names = list(hitters)
    allowed: list[tuple[str, float, float, float | None]] = []
    refused: Counter[str] = Counter()
    now = time.time
    while now() < start_at:
        time.sleep(0.0005)
    deadline = start_at + duration
    answered = start_at
    while answered < deadline:
        for name in names:
            sent = now()
            ok, extra = hitters[name]()
            answered = now()
            if ok:
                allowed.append((name, sent, answered, extra))
            else:
                refused[name] += 1
    cache.close()
    out.put((allowed, dict(refused)))


def max_in_span(times: list[float], span: float) -> int:
    """The most timestamps in any interval of ``span`` seconds."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def accuracy(
    records: list[tuple[str, float, float, float | None]],
    refused: Counter[str],
    names: list[str],
    first: float,
    last: float,
) -> list[dict[str, Any]]:
    """Per strategy: what was allowed, and whether it is what the algorithm promises (cachewise rows)."""
    rows = []
    interval = PERIOD / LIMIT
    for name in names:
        mine = [r for r in records if r[0] == name]
        sent = [r[1] for r in mine]
        answered = [r[2] for r in mine]
        total = len(mine)
        span_max = max_in_span(answered, PERIOD)
        # windows fully inside the run (epoch-aligned, as cachewise's fixed and sliding windows are)
        full = [
            w
            for w in range(math.floor(first / PERIOD), math.floor(last / PERIOD) + 1)
            if w * PERIOD >= first and (w + 1) * PERIOD <= last
        ]
        row: dict[str, Any] = {
            "strategy": name,
            "allowed": total,
            "refused": refused.get(name, 0),
            "max_any_2s": span_max,
            "run_s": last - first,
        }
        verdict, expected = "", ""
        if name == "cachewise fixed_window":
            per = Counter(round((s + extra) / PERIOD) - 1 for _, s, _, extra in mine if extra is not None)
            counts = [per.get(w, 0) for w in full]
            row["per_window"] = counts
            expected = f"{LIMIT} in each full window"
            ok = all(c == LIMIT for c in counts) and all(c <= LIMIT for c in per.values())
            verdict = "exact" if ok and counts else "NOT EXACT"
        elif name == "cachewise sliding_window":
            # hits certainly inside a window / span: sent and answered in it (the server's TIME lies between)
            per = Counter(
                math.floor(s / PERIOD) for _, s, a, _ in mine if math.floor(s / PERIOD) == math.floor(a / PERIOD)
            )
            counts = [per.get(w, 0) for w in full]
            row["per_window"] = counts
            worst = 0.0
            for _, s, _, _ in mine:  # spans ending at each hit's send time: [s - P, s]
                inside = sum(1 for _, s2, a2, _ in mine if s2 >= s - PERIOD and a2 <= s)
                f = (s % PERIOD) / PERIOD
                worst = max(worst, inside / (LIMIT * (1 + f)))
            row["worst_span_vs_bound"] = worst
            expected = f"≤ {LIMIT}/window; any 2 s span ≤ {LIMIT}×(1+f)"
            ok = all(c <= LIMIT for c in per.values()) and worst <= 1.0
            verdict = "within bound" if ok else "OUT OF BOUND"
        elif name == "cachewise token_bucket":
            lo = LIMIT + math.floor((max(sent) - min(answered)) / interval) - 1
            hi = LIMIT + math.floor((max(answered) - min(sent)) / interval)
            expected = f"burst {LIMIT} + 1 per {interval * 1000:.0f} ms: {lo}–{hi}"
            # before the first refill (answered < first sent + interval), no two hits may have seen the same count
            burst = [int(extra) for _, _, a, extra in mine if extra is not None and a < min(sent) + interval]
            distinct = len(set(burst)) == len(burst) <= LIMIT
            verdict = "exact" if lo <= total <= hi and distinct else "NOT EXACT"
        else:
            expected = "(not checked)"
        row["expected"], row["verdict"] = expected, verdict
        rows.append(row)
    return rows


def run_accuracy(url: str, prefix: str, duration: float, with_limits: bool) -> tuple[list[dict[str, Any]], float]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # time for the spawned processes to import and connect
    procs = [
        ctx.Process(target=hammer, args=(url, prefix, start_at, duration, with_limits, out)) for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    records: list[tuple[str, float, float, float | None]] = []
    refused: Counter[str] = Counter()
    try:
        for _ in procs:
            allowed, refusals = out.get(timeout=duration + 60)
            records += allowed
            refused.update(refusals)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    names = [f"cachewise {a}" for a in ALGORITHMS]
    if with_limits:
        names += [f"limits {k}" for k in LIMITS_STRATEGIES]
    first = min(r[1] for r in records)
    last = max(r[2] for r in records)
    calls = len(records) + sum(refused.values())
    return accuracy(records, refused, names, first, last), calls / (last - first)


def print_accuracy(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("strategy", "left"),
        ("allowed", "right"),
        ("refused", "right"),
        ("allowed/s", "right"),
        ("max in any 2 s", "right"),
        ("per full 2 s window", "left"),
        ("promise", "left"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        verdict = row["verdict"]
        style = "green" if verdict in ("exact", "within bound") else ("bold red" if verdict else "")
        table.add_row(
            row["strategy"],
            str(row["allowed"]),
            str(row["refused"]),
            f"{row['allowed'] / row['run_s']:.1f}",
            str(row["max_any_2s"]),
            ", ".join(map(str, row.get("per_window", []))) or "—",
            row["expected"],
            f"[{style}]{verdict}[/{style}]" if style else verdict,
        )
    console.print(table)


# -- main -----------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="calls per case per round (default 5000; 1500 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; 3 with --quick)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of part 2 (default 6; 4 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run (~30 s)")
    parser.add_argument("--url", help="run against this server (redis:// or rediss://) instead of an embedded one")
    parser.add_argument("--no-limits", action="store_true", help="skip the limits library")
    parser.add_argument(
        "--pin",
        choices=("none", "same", "split"),
        default="none",
        help="embedded server only (Linux): pin this process and the server to one CPU or two",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw numbers to PATH")
    args = parser.parse_args(argv)
    args.n = args.n or (1500 if args.quick else 5000)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.duration = args.duration or (4.0 if args.quick else 6.0)
    if args.n < 1 or args.rounds < 1 or args.duration < 2 * PERIOD:
        parser.error(f"--n and --rounds must be >= 1, --duration >= {2 * PERIOD} s")
    if args.pin != "none" and (args.url or not hasattr(os, "sched_setaffinity")):
        parser.error("--pin needs the embedded server (no --url) on Linux")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prefix = f"cwrl-{uuid.uuid4().hex[:10]}"
    server: EmbeddedServer | None = None
    started = time.perf_counter()
    with_limits = not args.no_limits
    if with_limits:
        try:
            import limits  # noqa: F401
        except ImportError as exc:
            console.print(f"[yellow]limits: skipped ({exc}); pip install 'limits[redis]'[/yellow]")
            with_limits = False
    try:
        if args.url:
            url = args.url
            transport = describe_url(url)
        else:
            server, url, transport = start_tcp_server()
        version = server_version(url)
        placement = pin(server, args.pin)
        if args.pin != "none":
            placement += " (worker processes of part 2: unpinned)"
        console.print(f"[bold]server[/bold]: {version}, transport: {transport}; CPU placement: {placement}")
        console.print(
            f"python {platform.python_version()}, redis-py {version_of('redis')}, hiredis {version_of('hiredis')}, "
            f"cachewise {version_of('cachewise')}, limits {version_of('limits')}; {os.cpu_count()} CPUs",
            style="dim",
        )
        bench = CostBench(url, prefix, args.n, args.rounds, with_limits)

        async def part1() -> dict[str, Any]:
            try:
                await bench.setup()
                console.print(
                    f"part 1: timing {len(bench.cases)} cases × {args.rounds} rounds × {args.n} calls…", style="dim"
                )
                await bench.run()
                assert bench.cache is not None
                return bench.cache.stats().total.as_dict()
            finally:
                await bench.close()

        stats = asyncio.run(part1())
        rows = cost_rows(bench)
        console.print(
            f"part 2: {PROCESSES} processes hammer one identity per strategy for {args.duration:g} s…", style="dim"
        )
        acc_rows, calls_per_s = run_accuracy(url, prefix, args.duration, with_limits)
        ttl_less = 0
        r = redis.Redis.from_url(url)
        try:
            ttl_less = sum(1 for k in r.scan_iter(match=f"{prefix}:_cw:rl:*", count=1000) if r.pttl(k) < 0)
        finally:
            r.close()
        if server is None:
            console.print(
                f"deleted the {cleanup_keys(url, prefix)} keys this run wrote (prefix {prefix!r})", style="dim"
            )
    finally:
        if server is not None:
            server.stop()

    print_cost(
        rows,
        f"one rate-limit hit, {version} over {transport.split(' (')[0]}: median of {args.rounds} rounds "
        f"× {args.n} calls (allowed hits, {IDENTITIES} identities)",
    )
    for name, reason in bench.skipped.items():
        console.print(f"  {name}: skipped: {reason}", style="yellow")
    print_accuracy(
        acc_rows,
        f"{PROCESSES} processes, one identity, {LIMIT} per {PERIOD} s (token bucket: burst "
        f"{LIMIT}), {args.duration:g} s, {calls_per_s:,.0f} calls/s over all strategies",
    )
    console.print(
        "max in any 2 s: the most allowed hits answered within any 2 s (client clock); an exact sliding limit would "
        f"allow {LIMIT}. The fixed windows allow up to 2×{LIMIT} across an edge, a token bucket burst + refill "
        f"({LIMIT} + {LIMIT}); the sliding counter at most {LIMIT}×(1+f), f = how far into its window the span ends.",
        style="dim",
    )
    console.print(
        f"cachewise counters: errors={stats['errors']} skipped={stats['skipped']} (must be 0); rate-limit keys "
        f"without a TTL after the run: {ttl_less} (must be 0)",
        style="dim",
    )
    missed = [r["case"] for r in rows if r["met"] is False]
    inexact = [r["strategy"] for r in acc_rows if r["verdict"] in ("NOT EXACT", "OUT OF BOUND")]
    console.print(
        f"targets: {sum(r['met'] is True for r in rows)} met, {len(missed)} missed"
        + (f" ({', '.join(missed)})" if missed else "")
        + f"; accuracy: {'all as promised' if not inexact else 'NOT as promised: ' + ', '.join(inexact)}"
        + f"; {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        doc = {
            "server": version,
            "transport": transport,
            "cpu_placement": placement,
            "n": args.n,
            "rounds": args.rounds,
            "duration": args.duration,
            "python": sys.version,
            "platform": platform.platform(),
            "versions": {d: version_of(d) for d in ("cachewise", "redis", "hiredis", "limits")},
            "cost": rows,
            "skipped": bench.skipped,
            "accuracy": acc_rows,
            "cachewise_stats": stats,
            "ttl_less_keys": ttl_less,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
        console.print(f"raw numbers written to {args.json}", style="dim")
    return 1 if stats["errors"] or ttl_less else 0


if __name__ == "__main__":
    sys.exit(main())
