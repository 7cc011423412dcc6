"""Does a cold key reach the origin once, across processes, and how fast do the others get its value?

The scenario of the issue: 4 worker processes × 50 concurrent callers ask for ONE cold key at the same instant; the
origin (a simulated one: it sleeps 50 ms) counts its calls in a counter shared by the processes.  The same scenario
runs for cachewise (sync: threads with ``@cache.cached``; async: asyncio tasks with ``@cache.cached``), cashews
(plain ``@cache(ttl=...)`` and ``@cache(ttl=..., lock=True)``), aiocache (``@cached_stampede`` with ``RedisCache``)
and dogpile.cache (``dogpile.cache.redis`` with ``distributed_lock=True``, ``get_or_create``).

Method, per library: 4 processes are spawned and set up (their own clients); each round, the parent sends every
process a new cold key, each process parks its callers (threads for sync libraries, tasks for async ones) and says
so; the parent reads ``INFO commandstats``, notes the time and sets a ``multiprocessing.Event``; every process
then releases its callers at once.  Measured: origin calls ("loads"); the wall time from the release to the last
caller's answer (``time.time()``, all processes on this machine); each caller's latency (from its own release to
its answer; p50/p99 over all callers); and commands:

* **sent**: every command the processes' redis-py clients send, counted client side (a hook on redis-py's command
  packing, and on cachewise's ``Connection.pipelined``, which sends commands it packed itself) and attributed to
  the caller that sent it (a context variable: a thread, or a task and the tasks it spawns); commands of no caller
  (cachewise's pub/sub listener, health checks) are "background".  The loaders' commands are the "holders'";
  **per waiter** = the other callers' commands / the other callers.
* **executed**: the ``INFO commandstats`` delta over the round (``INFO`` itself excluded): what the server ran,
  *including the commands that Lua scripts run inside one call* (``redis.call``), so it is larger than "sent" for
  libraries that use scripts.  Exact on the embedded server (nothing else uses it); with ``--url`` it also counts
  whatever else the server is doing.
* Connection set-up (what redis-py sends while it opens a connection: ``HELLO``, ``AUTH``, ``CLIENT SETINFO``, a
  health-check ``PING``) is counted apart: it depends on how many connections a pool already had, not on the
  protocol.  The server-side count leaves them out too (the set-up ``PING``s as counted by the clients).

Rounds: round 0 runs on freshly started processes (connections opened, scripts loaded — on the embedded server the
script cache is flushed before each library — pub/sub subscribed) and is reported apart; then one round with a
single caller (what a lone miss costs); then ``--rounds`` measured rounds, each on a new cold key.  The table gives
the median over the measured rounds of each figure, and the min–max of loads.

By default a private embedded Valkey is started with a TCP port on 127.0.0.1 (aiocache and cashews cannot use a unix
socket) and stopped at the end; ``--url redis://host:port/db`` uses another server (keys get a unique prefix and
are deleted at the end; nothing is ever flushed).  ``--trace`` also records when each step of cachewise's
cold-key flow ran (read, lease, wait, wake-up, re-read) and when its pub/sub notices arrived, and prints where the
time goes.

Run from the repository root: ``.venv/bin/python benchmarks/stampede.py [--quick] [--rounds R] [--url URL]
[--only NAMES] [--trace] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any
from urllib.parse import urlsplit

from common import cleanup_keys, describe_url, start_tcp_server, version_of

ORIGIN_SECONDS = 0.050
TTL = 300  # seconds: nothing expires during a run
PROCESSES = 4
CALLERS = 50
TARGET_LOADS = 1
TARGET_WALL_MS = ORIGIN_SECONDS * 1000 + 10
TARGET_WAITER_COMMANDS = 3.0
READY_TIMEOUT = 60.0  # a process's setup (imports, clients)
ROUND_TIMEOUT = 60.0  # one round (dogpile's takes ~1.5 s)

#: name, library, how its callers run, what is measured
VARIANTS: list[tuple[str, str, str, str]] = [
    ("cachewise sync", "cachewise", "threads", "@cache.cached (def)"),
    ("cachewise async", "cachewise", "tasks", "@cache.cached (async def)"),
    ("cashews", "cashews", "tasks", "@cache(ttl) (default protected=True)"),
    ("cashews lock=True", "cashews", "tasks", "@cache(ttl, lock=True)"),
    ("aiocache", "aiocache", "tasks", "@cached_stampede(lease=2), RedisCache"),
    ("dogpile.cache", "dogpile.cache", "threads", "redis backend, distributed_lock=True, get_or_create"),
    # Floors: what one round trip per caller costs in this harness (no cache, no origin).
    ("floor: 1 GET (threads)", "floor", "threads", "redis-py GET of the key, nothing else"),
    ("floor: 1 GET (tasks)", "floor", "tasks", "redis.asyncio GET of the key, nothing else"),
]


PEER_DISTS = ("cachewise", "redis", "hiredis", "cashews", "aiocache", "dogpile.cache")


def _console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)  # no 80-column squeeze in logs


# =====================================================================================================================
# Worker side (runs in each spawned process)
# =====================================================================================================================
@dataclass
class Caller:
    """One caller's figures (times are ``time.time()`` seconds)."""

    start: float = 0.0
    end: float = 0.0
    commands: int = 0  # commands this caller's client calls sent (connection set-up excluded)
    setup: int = 0  # commands sent while opening connections (HELLO, AUTH, CLIENT SETINFO, a PING)
    loaded: bool = False  # it ran the origin
    load_id: int = 0  # which origin call produced the value it got (0: none)
    error: str = ""
    trace: list[tuple[str, float, float]] = field(default_factory=list)  # (step, began, ended), with --trace


_CALLER: ContextVar[Caller | None] = ContextVar("stampede_caller", default=None)
_background = [0, 0]  # commands, set-up commands sent outside any caller (pub/sub listener, health checks)
_background_lock = threading.Lock()
_setup_pings = [0]  # health-check PINGs sent while opening connections
_notices: list[float] = []  # with --trace: when cachewise's listener received each fill notice
#: Set while redis-py opens a connection: what it sends then (HELLO, AUTH, CLIENT SETINFO, and the health-check PING
#: that redis-py slips between them when ``health_check_interval`` is set) is connection set-up.
_SETUP: ContextVar[bool] = ContextVar("stampede_setup", default=False)
#: The server's names for set-up commands (8.x clients also send CLIENT MAINT_NOTIFICATIONS, which Valkey rejects as
#: an unknown subcommand); a set-up PING cannot be told apart on the server.
SETUP_STATS = frozenset(
    {
        "cmdstat_hello",
        "cmdstat_auth",
        "cmdstat_client|setinfo",
        "cmdstat_client|setname",
        "cmdstat_client|maint_notifications",
    }
)


def _count_command(args: tuple[Any, ...]) -> None:
    setup = _SETUP.get()
    if setup and args and str(args[0]).upper() in ("PING", "B'PING'"):
        with _background_lock:
            _setup_pings[0] += 1  # the server counts it as an ordinary PING: subtracted from "executed"
    caller = _CALLER.get()
    if caller is not None:
        if setup:
            caller.setup += 1
        else:
            caller.commands += 1
    else:
        with _background_lock:
            _background[1 if setup else 0] += 1


def install_command_counter() -> None:
    """Count every command redis-py packs (sync and asyncio clients, pipelines included), per caller, and tell
    connection set-up apart."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def pack(self: Any, *args: Any) -> Any:
            _count_command(args)
            return fn(self, *args)

        return pack

    def setup(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
            token = _SETUP.set(True)
            try:
                return fn(self, *args, **kwargs)
            finally:
                _SETUP.reset(token)

        return connect

    def asetup(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
            token = _SETUP.set(True)
            try:
                return await fn(self, *args, **kwargs)
            finally:
                _SETUP.reset(token)

        return connect

    for cls in (sconn.PythonRespSerializer, sconn.HiredisRespSerializer):
        cls.pack = counted(cls.pack)  # type: ignore[method-assign]
    aconn.AbstractConnection.pack_command = counted(aconn.AbstractConnection.pack_command)  # type: ignore[method-assign]
    # cachewise sends its hits and script calls as protocol bytes it packed itself (memoised for hits), through
    # Connection.pipelined/apipelined: count the commands of each payload there.
    from cachewise.transport.connection import Connection

    def counted_payload(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def send(self: Any, payload: bytes, count: int) -> Any:
            for _ in range(count):
                _count_command(("PACKED",))
            return fn(self, payload, count)

        return send

    Connection.pipelined = counted_payload(Connection.pipelined)  # type: ignore[method-assign]
    Connection.apipelined = counted_payload(Connection.apipelined)  # type: ignore[method-assign]
    sync_connect = sconn.AbstractConnection.connect_check_health
    sconn.AbstractConnection.connect_check_health = setup(sync_connect)  # type: ignore[method-assign]
    async_connect = aconn.AbstractConnection.connect_check_health
    aconn.AbstractConnection.connect_check_health = asetup(async_connect)  # type: ignore[method-assign,assignment]


def install_trace() -> None:
    """Record when each step of cachewise's cold-key flow ran, and when fill notices arrived."""
    from cachewise.engine import engine
    from cachewise.transport import notify

    original = engine.reload

    def traced(ctx: Any, req: Any, found: Any, lease: Any, why: str) -> Any:
        return _traced_flow(original(ctx, req, found, lease, why), _CALLER.get())

    engine.reload = traced  # the engine calls reload(...) through its module's namespace
    handle = notify.FillNotifier._handle

    def traced_handle(self: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "message":
            _notices.append(time.time())
        handle(self, message)

    notify.FillNotifier._handle = traced_handle  # type: ignore[method-assign]


def _traced_flow(inner: Generator[Any, Any, Any], caller: Caller | None) -> Generator[Any, Any, Any]:
    if caller is not None:
        now = time.time()
        caller.trace.append(("read", caller.start, now))  # the first MGET ran before the flow
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = inner.send(reply) if error is None else inner.throw(error)
        except StopIteration as done:
            return done.value
        began = time.time()
        reply, error = None, None
        try:
            reply = yield step
        except GeneratorExit:
            inner.close()
            raise
        except BaseException as exc:
            error = exc
        if caller is not None:
            caller.trace.append((_step_name(step), began, time.time()))


def _step_name(step: Any) -> str:
    """A flow step's name in the trace: the command's for a :class:`~cachewise.runner.Send` ("read", "acquire",
    "write", "release"), else the step's kind ("load", "listen", "wait", "join", "share")."""
    command = getattr(step, "command", None)
    return str(command.name) if command is not None else type(step).__name__.lower()


class _LogCounter(logging.Handler):
    """Counts what the libraries log at WARNING or above (aiocache logs, then swallows, server errors)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if not self.first:
            self.first = f"{record.name}: {record.getMessage()[:160]}"


class Origin:
    """The simulated origin: counts its calls in the shared counter, then takes ORIGIN_SECONDS."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def _begin(self, key: str) -> dict[str, Any]:
        with self.counter.get_lock():
            self.counter.value += 1
            n = int(self.counter.value)
        caller = _CALLER.get()
        if caller is not None:
            caller.loaded = True
        return {"key": key, "load": n, "pid": os.getpid(), "data": "x" * 64}

    def sync(self, key: str) -> dict[str, Any]:
        value = self._begin(key)
        time.sleep(ORIGIN_SECONDS)
        return value

    async def aio(self, key: str) -> dict[str, Any]:
        value = self._begin(key)
        await asyncio.sleep(ORIGIN_SECONDS)
        return value


def _judge(caller: Caller, key: str, value: Any) -> None:
    if isinstance(value, dict) and value.get("key") == key and isinstance(value.get("load"), int):
        caller.load_id = value["load"]
    else:
        caller.error = f"wrong value: {value!r:.80}"


class Runner:
    """One library in one process: runs a round of callers."""

    sync = True
    call: Callable[[str], Any]
    acall: Callable[[str], Awaitable[Any]]
    stats: Callable[[], dict[str, float]] | None = None
    closers: list[Callable[[], Any]]

    def __init__(self) -> None:
        self.closers = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- one round -------------------------------------------------------------------------------------------------
    def round(self, key: str, callers: int, pipe: Pipe, release: Any) -> dict[str, Any]:
        _notices.clear()
        with _background_lock:
            _background[:] = [0, 0]
            _setup_pings[0] = 0
        before = self.stats() if self.stats is not None else {}
        if self.sync:
            records = self._sync_round(key, callers, pipe, release)
        else:
            assert self.loop is not None
            records = self.loop.run_until_complete(self._async_round(key, callers, pipe, release))
        after = self.stats() if self.stats is not None else {}
        with _background_lock:
            background, background_setup = _background
            setup_pings = _setup_pings[0]
        return {
            "callers": [asdict(r) for r in records],
            "background": background,
            "background_setup": background_setup,
            "setup_pings": setup_pings,
            "stats": {k: after[k] - before.get(k, 0) for k in after},
            "notices": list(_notices),
            "pid": os.getpid(),
        }

    def _arm(self, pipe: Pipe, release: Any) -> None:
        gc.collect()
        pipe.send(("armed", None))
        if not release.wait(ROUND_TIMEOUT):
            raise TimeoutError("never released")

    def _sync_round(self, key: str, callers: int, pipe: Pipe, release: Any) -> list[Caller]:
        records = [Caller() for _ in range(callers)]
        go = threading.Event()
        parked = threading.Barrier(callers + 1)
        call = self.call

        def one(caller: Caller) -> None:
            _CALLER.set(caller)
            parked.wait()
            go.wait()
            caller.start = time.time()
            try:
                value = call(key)
            except Exception as exc:
                caller.error = f"{type(exc).__name__}: {exc}"[:200]
            else:
                _judge(caller, key, value)
            caller.end = time.time()
            _CALLER.set(None)

        threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in records]
        for t in threads:
            t.start()
        parked.wait()
        self._arm(pipe, release)
        go.set()
        for t in threads:
            t.join(ROUND_TIMEOUT)
        return records

    async def _async_round(self, key: str, callers: int, pipe: Pipe, release: Any) -> list[Caller]:
        records = [Caller() for _ in range(callers)]
        go = asyncio.Event()
        acall = self.acall

        async def one(caller: Caller) -> None:
            _CALLER.set(caller)
            await go.wait()
            caller.start = time.time()
            try:
                value = await acall(key)
            except Exception as exc:
                caller.error = f"{type(exc).__name__}: {exc}"[:200]
            else:
                _judge(caller, key, value)
            caller.end = time.time()

        tasks = [asyncio.ensure_future(one(r)) for r in records]
        await asyncio.sleep(0)  # every task is now parked on go.wait()
        self._arm(pipe, release)  # blocks this loop until the release: nothing else has to run meanwhile
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), ROUND_TIMEOUT)
        return records

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    assert self.loop is not None
                    self.loop.run_until_complete(result)
            except Exception:
                pass
        if self.loop is not None:
            self.loop.close()


def _cachewise_stats(cache: Any) -> Callable[[], dict[str, float]]:
    keep = (
        "hits",
        "misses",
        "loads",
        "leases",
        "waits",
        "wait_timeouts",
        "errors",
        "invalid",
        "sets",
        "refused_writes",
        "roundtrips",
    )

    def stats() -> dict[str, float]:
        total = cache.stats().total
        return {k: getattr(total, k) for k in keep}

    return stats


def make_runner(name: str, url: str, prefix: str, origin: Origin) -> Runner:
    """Set one library up in this process (raises if it cannot run)."""
    runner = Runner()
    tag = name.replace(" ", "-").replace("=", "").replace(".", "")
    parts = urlsplit(url)
    if name.startswith("cachewise"):
        from cachewise import Cache

        cache = Cache(url, namespace=f"{prefix}-{tag}")
        runner.stats = _cachewise_stats(cache)
        if name == "cachewise sync":

            @cache.cached(ttl=TTL, key="stampede:{k}")
            def load(k: str) -> dict[str, Any]:
                return origin.sync(k)

            runner.call = load
            runner.closers.append(cache.close)
        else:

            @cache.cached(ttl=TTL, key="stampede:{k}")
            async def aload(k: str) -> dict[str, Any]:
                return await origin.aio(k)

            runner.sync = False
            runner.loop = asyncio.new_event_loop()
            runner.acall = aload
            runner.closers.append(cache.aclose)
    elif name.startswith("cashews"):
        from cashews import Cache as CashewsCache

        if parts.scheme not in ("redis", "rediss"):
            raise RuntimeError("its settings URL has no unix:// scheme")
        cc = CashewsCache()
        cc.setup(url)
        runner.sync = False
        runner.loop = asyncio.new_event_loop()
        runner.loop.run_until_complete(cc.init())
        lock = name.endswith("lock=True")

        @cc(ttl=TTL, key=f"{prefix}:{tag}:{{k}}", lock=lock)
        async def cload(k: str) -> dict[str, Any]:
            return await origin.aio(k)

        runner.acall = cload
        runner.closers.append(cc.close)
    elif name == "aiocache":
        from aiocache import RedisCache, cached_stampede

        if parts.scheme != "redis":
            raise RuntimeError("RedisCache takes host/port only")

        def key_builder(fn: Any, k: str) -> str:
            return k

        deco = cached_stampede(
            lease=2,
            ttl=TTL,
            cache=RedisCache,
            key_builder=key_builder,
            namespace=f"{prefix}-{tag}",
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int(parts.path.strip("/") or 0),
            password=parts.password,
        )

        async def aio_load(k: str) -> dict[str, Any]:
            return await origin.aio(k)

        wrapped = deco(aio_load)
        runner.sync = False
        runner.loop = asyncio.new_event_loop()
        runner.acall = wrapped
        runner.closers.append(wrapped.cache.close)
    elif name == "dogpile.cache":
        from dogpile.cache import make_region

        key_prefix = f"{prefix}-{tag}:"
        region = make_region(key_mangler=lambda k: key_prefix + k).configure(
            "dogpile.cache.redis",
            expiration_time=TTL,
            arguments={
                "url": url,
                "distributed_lock": True,
                "thread_local_lock": False,  # as its documentation says, with distributed_lock
                "lock_timeout": 10,  # a lock left by a dead process expires (the default never does)
                "redis_expiration_time": TTL,
            },
        )

        def dload(k: str) -> Any:
            return region.get_or_create(k, lambda: origin.sync(k))

        runner.call = dload
        runner.closers.append(lambda: region.backend.writer_client.close())
    elif name.startswith("floor"):
        import redis
        import redis.asyncio

        if name.endswith("(threads)"):
            client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, max_connections=64))

            def fget(k: str) -> dict[str, Any]:
                client.get(k)
                return {"key": k, "load": 0}

            runner.call = fget
            runner.closers.append(client.close)
        else:
            aclient = redis.asyncio.Redis.from_url(url)

            async def afget(k: str) -> dict[str, Any]:
                await aclient.get(k)
                return {"key": k, "load": 0}

            runner.sync = False
            runner.loop = asyncio.new_event_loop()
            runner.acall = afget
            runner.closers.append(aclient.aclose)
    else:
        raise ValueError(f"unknown variant {name!r}")
    return runner


def worker_main(name: str, url: str, prefix: str, pipe: Pipe, release: Any, counter: Any, trace: bool) -> None:
    """A worker process: set the library up, then run rounds until told to stop."""
    logs = _LogCounter()
    logging.getLogger().addHandler(logs)
    logging.getLogger().setLevel(logging.WARNING)
    install_command_counter()
    if trace and name.startswith("cachewise"):
        install_trace()
    try:
        runner = make_runner(name, url, prefix, Origin(counter))
    except Exception as exc:
        pipe.send(("skip", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready", None))
    try:
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                break
            _, key, callers = message
            logs.count, logs.first = 0, ""
            result = runner.round(key, callers, pipe, release)
            result["logged"] = logs.count
            result["logged_first"] = logs.first
            pipe.send(("done", result))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        runner.close()


# =====================================================================================================================
# Parent side
# =====================================================================================================================
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Round:
    label: str
    key: str
    t0: float
    loads: int
    callers: list[dict[str, Any]]
    background: int
    setup: int  # connection set-up commands sent (callers' and background), counted apart
    executed: int | None
    executed_setup: int | None
    stats: dict[str, float]
    notices: list[list[float]]
    logged: int
    logged_first: str

    def figures(self) -> dict[str, Any]:
        n = len(self.callers)
        ends = [c["end"] for c in self.callers]
        latencies = [1000 * (c["end"] - c["start"]) for c in self.callers]
        starts = [1000 * (c["start"] - self.t0) for c in self.callers]
        holders = [c for c in self.callers if c["loaded"]]
        waiters = [c for c in self.callers if not c["loaded"]]
        sent = sum(c["commands"] for c in self.callers) + self.background
        return {
            "round": self.label,
            "callers": n,
            "loads": self.loads,
            "wall_ms": 1000 * (max(ends) - self.t0) if n else 0.0,
            "p50_ms": percentile(latencies, 0.50) if n else 0.0,
            "p99_ms": percentile(latencies, 0.99) if n else 0.0,
            "max_ms": max(latencies) if n else 0.0,
            "release_lag_max_ms": max(starts) if n else 0.0,
            "sent": sent,
            "sent_per_caller": sent / n if n else 0.0,
            "holder_commands": sum(c["commands"] for c in holders),
            "waiter_commands_per_waiter": (sum(c["commands"] for c in waiters) / len(waiters)) if waiters else 0.0,
            "waiter_commands_max": max((c["commands"] for c in waiters), default=0),
            "background_commands": self.background,
            "setup_commands": self.setup,
            "executed": self.executed,
            "executed_setup": self.executed_setup,
            "executed_per_caller": (self.executed / n) if n and self.executed is not None else None,
            "errors": sum(bool(c["error"]) for c in self.callers),
            "first_error": next((c["error"] for c in self.callers if c["error"]), ""),
            "distinct_values": len({c["load_id"] for c in self.callers if c["load_id"]}),
            "logged": self.logged,
            "logged_first": self.logged_first,
            "stats": self.stats,
        }


@dataclass
class Variant:
    name: str
    library: str
    callers_run_as: str
    what: str
    skipped: str = ""
    cold: Round | None = None
    solo: Round | None = None
    rounds: list[Round] = field(default_factory=list)


class Server:
    """The server's command counters, read with one client of the parent."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.client.ping()

    def executed(self) -> tuple[int, int]:
        """Commands the server ran so far (INFO itself excluded): (everything else, connection set-up)."""
        stats = self.client.info("commandstats")
        counts = {
            k: int(v.get("calls", 0)) + int(v.get("rejected_calls", 0))
            for k, v in stats.items()
            if k != "cmdstat_info" and isinstance(v, dict)
        }
        setup = sum(n for k, n in counts.items() if k in SETUP_STATS)
        return sum(counts.values()) - setup, setup

    def version(self) -> str:
        info = self.client.info("server")
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info.get('redis_version', '?')}"


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, prefix: str, server: Server, owns_server: bool) -> None:
        self.args = args
        self.url = url
        self.prefix = prefix
        self.server = server
        self.owns_server = owns_server
        self.ctx = mp.get_context("spawn")

    def run_variant(self, variant: Variant) -> None:
        release = self.ctx.Event()
        counter = self.ctx.Value("i", 0)
        procs: list[Any] = []
        pipes: list[Pipe] = []
        console = _console()
        try:
            for _ in range(self.args.processes):
                mine, theirs = self.ctx.Pipe()
                p = self.ctx.Process(
                    target=worker_main,
                    args=(variant.name, self.url, self.prefix, theirs, release, counter, self.args.trace),
                    daemon=True,
                )
                p.start()
                theirs.close()
                procs.append(p)
                pipes.append(mine)
            replies = self._collect(pipes, "ready", READY_TIMEOUT, allow_skip=True)
            skips = [r for r in replies if r[0] == "skip"]
            if skips:
                variant.skipped = str(skips[0][1])
                return
            if self.owns_server:
                self.server.client.script_flush()  # round 0 starts without anyone's scripts on the server
            stem = f"{self.prefix}-{variant.name.replace(' ', '-')}"
            n = self.args.callers
            variant.cold = self._round("cold", f"{stem}-cold", [n] * len(pipes), pipes, release, counter)
            variant.solo = self._round("solo", f"{stem}-solo", [1] + [0] * (len(pipes) - 1), pipes, release, counter)
            for r in range(self.args.rounds):
                variant.rounds.append(
                    self._round(str(r + 1), f"{stem}-{r + 1}", [n] * len(pipes), pipes, release, counter)
                )
            console.print(f"  {variant.name}: {len(variant.rounds)} rounds done", style="dim")
        except Exception as exc:
            variant.skipped = f"failed during the run: {type(exc).__name__}: {exc}"
        finally:
            for pipe in pipes:
                with contextlib.suppress(Exception):
                    pipe.send(("stop",))
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.terminate()
                    p.join(2)
                if p.is_alive():
                    p.kill()
                    p.join(2)
            for pipe in pipes:
                pipe.close()

    def _collect(self, pipes: list[Pipe], want: str, timeout: float, *, allow_skip: bool = False) -> list[Any]:
        deadline = time.monotonic() + timeout
        replies: dict[int, Any] = {}
        while len(replies) < len(pipes):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pipes) - len(replies)} processes did not answer {want!r} in {timeout:.0f} s")
            pending = {id(p): (i, p) for i, p in enumerate(pipes) if i not in replies}
            for ready in wait_pipes([p for _, p in pending.values()], left):
                i, pipe = pending[id(ready)]
                try:
                    message = pipe.recv()
                except EOFError:
                    raise RuntimeError("a worker process died") from None
                if message[0] != want and not (allow_skip and message[0] == "skip"):
                    raise RuntimeError(f"expected {want!r}, got {message!r:.200}")
                replies[i] = message
        return [replies[i] for i in range(len(pipes))]

    def _round(self, label: str, key: str, callers: list[int], pipes: list[Pipe], release: Any, counter: Any) -> Round:
        time.sleep(0.05)  # let the previous round's connections and threads settle
        with counter.get_lock():
            counter.value = 0
        release.clear()
        for pipe, n in zip(pipes, callers):
            pipe.send(("round", key, n))
        self._collect(pipes, "armed", ROUND_TIMEOUT)
        before = self.server.executed()
        t0 = time.time()
        release.set()
        done = self._collect(pipes, "done", ROUND_TIMEOUT)
        after = self.server.executed()
        results = [d[1] for d in done]
        stats: dict[str, float] = {}
        for res in results:
            for k, v in res["stats"].items():
                stats[k] = stats.get(k, 0) + v
        return Round(
            label=label,
            key=key,
            t0=t0,
            loads=int(counter.value),
            callers=[c for res in results for c in res["callers"]],
            background=sum(res["background"] for res in results),
            setup=sum(res["background_setup"] + sum(c["setup"] for c in res["callers"]) for res in results),
            executed=after[0] - before[0] - sum(res["setup_pings"] for res in results),
            executed_setup=after[1] - before[1],
            stats=stats,
            notices=[res["notices"] for res in results],
            logged=sum(res["logged"] for res in results),
            logged_first=next((res["logged_first"] for res in results if res["logged_first"]), ""),
        )


# -- summaries ----------------------------------------------------------------------------------------------------
def summarise(variant: Variant) -> dict[str, Any]:
    rounds = [r.figures() for r in variant.rounds]
    med = {
        k: statistics.median(f[k] for f in rounds)
        for k in (
            "loads",
            "wall_ms",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "release_lag_max_ms",
            "sent_per_caller",
            "waiter_commands_per_waiter",
            "holder_commands",
            "background_commands",
        )
    }
    executed = [f["executed_per_caller"] for f in rounds if f["executed_per_caller"] is not None]
    med["executed_per_caller"] = statistics.median(executed) if executed else None
    solo = variant.solo.figures() if variant.solo else None
    # The brief's server-side figure: (executed − loads × a lone miss's executed) / waiters.
    per_waiter_exec = []
    if solo is not None and solo["executed"] is not None:
        for f in rounds:
            waiters = f["callers"] - f["loads"]
            if waiters > 0 and f["executed"] is not None:
                per_waiter_exec.append((f["executed"] - f["loads"] * solo["executed"]) / waiters)
    loads = [f["loads"] for f in rounds]
    # Only meaningful when the one holder did what a lone miss does (with several loads, holders differ).
    single = all(n == 1 for n in loads)
    med["executed_per_waiter"] = statistics.median(per_waiter_exec) if per_waiter_exec and single else None
    out: dict[str, Any] = {
        "variant": variant.name,
        "library": variant.library,
        "callers_run_as": variant.callers_run_as,
        "what": variant.what,
        "median": med,
        "loads_min": min(loads),
        "loads_max": max(loads),
        "errors": sum(f["errors"] for f in rounds),
        "first_error": next((f["first_error"] for f in rounds if f["first_error"]), ""),
        "logged": sum(f["logged"] for f in rounds),
        "logged_first": next((f["logged_first"] for f in rounds if f["logged_first"]), ""),
        "rounds": rounds,
        "cold": variant.cold.figures() if variant.cold else None,
        "solo": solo,
    }
    if variant.library == "cachewise":
        out["targets"] = {
            "one_load": all(n == TARGET_LOADS for n in loads),
            "wall": med["wall_ms"] <= TARGET_WALL_MS,
            "waiter_commands": med["waiter_commands_per_waiter"] <= TARGET_WAITER_COMMANDS,
        }
        out["stats"] = {k: statistics.median(f["stats"].get(k, 0) for f in rounds) for k in rounds[0]["stats"]}
    return out


def trace_breakdown(rounds: list[Round]) -> dict[str, float]:
    """Where a cachewise cold key's time goes (ms after the release; medians over rounds)."""
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            rows.setdefault(name, []).append(value)

    for r in rounds:
        ms = functools.partial(lambda t0, t: 1000 * (t - t0), r.t0)
        holders = [c for c in r.callers if c["loaded"]]
        waiters = [c for c in r.callers if not c["loaded"]]
        add("callers released (last)", max(ms(c["start"]) for c in r.callers))
        add("first read done (median caller)", statistics.median(ms(c["trace"][0][2]) for c in r.callers if c["trace"]))
        listens = [s for c in r.callers for s in c["trace"] if s[0] == "listen"]
        if listens:
            add("LISTEN step (longest)", max(1000 * (s[2] - s[1]) for s in listens))
        if holders:
            h = holders[0]
            steps = h["trace"]
            leases = [s for s in steps if s[0] == "acquire"]
            loads = [s for s in steps if s[0] == "load"]
            writes = [s for s in steps if s[0] == "write"]
            if leases:
                add("holder: lease granted", ms(leases[0][2]))
            if loads:
                add("holder: origin returned", ms(loads[0][2]))
            if writes:
                add("holder: value stored + published", ms(writes[-1][2]))
        firsts = [min((t for t in n if t >= r.t0), default=None) for n in r.notices]
        firsts_ms = [ms(t) for t in firsts if t is not None]
        if firsts_ms:
            add("notice received (first process)", min(firsts_ms))
            add("notice received (last process)", max(firsts_ms))
        acquires = [next((s for s in c["trace"] if s[0] == "acquire"), None) for c in waiters if c["trace"]]
        acq = [ms(s[2]) for s in acquires if s is not None]
        if acq:
            add("waiters: lease script answered (median)", statistics.median(acq))
            add("waiters: lease script answered (last)", max(acq))
        waits = [s for c in waiters for s in c["trace"] if s[0] == "wait"]
        if waits:
            add("waiters: woken (median)", statistics.median(ms(s[2]) for s in waits))
            add("waiters: woken (last)", max(ms(s[2]) for s in waits))
        rereads = [s for c in waiters for s in c["trace"] if s[0] == "read"]
        if rereads:
            add("waiters: re-read MGET (median duration)", statistics.median(1000 * (s[2] - s[1]) for s in rereads))
            add("waiters: re-read MGET (longest)", max(1000 * (s[2] - s[1]) for s in rereads))
        if waiters:
            add("waiters: answered (median)", statistics.median(ms(c["end"]) for c in waiters))
            add("waiters: answered (last)", max(ms(c["end"]) for c in waiters))
    return {k: statistics.median(v) for k, v in rows.items()}


# -- report -------------------------------------------------------------------------------------------------------
def print_table(summaries: list[dict[str, Any]], skipped: dict[str, str], title: str) -> None:
    from rich.table import Table

    def fmt(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    def mark(ok: bool | None) -> str:
        return {None: "", True: "[green]met[/green]", False: "[bold red]MISSED[/bold red]"}[ok]

    table = Table(title=title, title_justify="left")
    table.add_column("variant", no_wrap=True)
    table.add_column("as")
    table.add_column("loads", justify="right")
    table.add_column("min–max", justify="right", style="dim")
    table.add_column("wall ms", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("sent /caller", justify="right")
    table.add_column("sent /waiter", justify="right")
    table.add_column("exec /caller", justify="right", style="dim")
    table.add_column("exec /waiter", justify="right", style="dim")
    table.add_column("1 load")
    table.add_column(f"wall ≤ {TARGET_WALL_MS:.0f}")
    table.add_column(f"≤ {TARGET_WAITER_COMMANDS:.0f}/waiter")
    for s in summaries:
        m = s["median"]
        t = s.get("targets", {})
        if s["library"] == "floor" and s is next(x for x in summaries if x["library"] == "floor"):
            table.add_section()
        table.add_row(
            s["variant"],
            s["callers_run_as"],
            fmt(m["loads"], 0 if float(m["loads"]).is_integer() else 1),
            f"{s['loads_min']}–{s['loads_max']}",
            fmt(m["wall_ms"]),
            fmt(m["p50_ms"]),
            fmt(m["p99_ms"]),
            fmt(m["sent_per_caller"], 2),
            fmt(m["waiter_commands_per_waiter"], 2),
            fmt(m["executed_per_caller"], 2),
            fmt(m["executed_per_waiter"], 2),
            mark(t.get("one_load")),
            mark(t.get("wall")),
            mark(t.get("waiter_commands")),
        )
    for name, reason in skipped.items():
        table.add_row(name, "", "", "", "", "", "", "", "", "", "", "", "", "", style="yellow")
        table.add_row(f"  skipped: {reason}"[:150], style="yellow")
    _console().print(table)


def print_first_rounds(summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(
        title="round 0 on freshly started processes (not in the medians), and a lone miss", title_justify="left"
    )
    for col in (
        "library / variant",
        "round 0: loads",
        "wall ms",
        "p99 ms",
        "sent /caller",
        "background",
        "conn. set-up",
        "executed /caller",
        "lone miss: sent",
        "executed",
        "ms",
    ):
        table.add_column(col, justify="left" if col.startswith("library") else "right")
    for s in summaries:
        c, solo = s["cold"], s["solo"]
        table.add_row(
            s["variant"],
            str(c["loads"]),
            f"{c['wall_ms']:.1f}",
            f"{c['p99_ms']:.1f}",
            f"{c['sent_per_caller']:.2f}",
            str(c["background_commands"]),
            str(c["setup_commands"]),
            "—" if c["executed_per_caller"] is None else f"{c['executed_per_caller']:.2f}",
            str(solo["sent"]),
            "—" if solo["executed"] is None else str(solo["executed"]),
            f"{solo['wall_ms']:.1f}",
        )
    _console().print(table)


def print_trace(traces: dict[str, dict[str, dict[str, float]]]) -> None:
    from rich.table import Table

    names = list(traces)
    table = Table(title="--trace: where a cachewise cold key's time goes (ms after the release)", title_justify="left")
    table.add_column("event")
    for name in names:
        table.add_column(f"{name} (rounds)", justify="right")
        table.add_column(f"{name} (round 0)", justify="right", style="dim")
    events: list[str] = []
    for name in names:
        for figures in traces[name].values():
            events += [e for e in figures if e not in events]
    for event in events:
        cells = []
        for name in names:
            for part in ("rounds", "cold"):
                v = traces[name].get(part, {}).get(event)
                cells.append("" if v is None else f"{v:.1f}")
        table.add_row(event, *cells)
    _console().print(table)


# -- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per library (default 5; 2: --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds")
    parser.add_argument("--processes", type=int, default=PROCESSES, help=f"worker processes (default {PROCESSES})")
    parser.add_argument("--callers", type=int, default=CALLERS, help=f"callers per process (default {CALLERS})")
    parser.add_argument("--url", help="run against this server (redis:// or rediss://) instead of an embedded one")
    parser.add_argument("--only", help="comma-separated variants to run (e.g. 'cachewise sync,cachewise async')")
    parser.add_argument("--no-peers", action="store_true", help="cachewise only")
    parser.add_argument("--trace", action="store_true", help="also time each step of cachewise's flow")
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures to PATH")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if args.rounds < 1 or args.processes < 1 or args.callers < 2:
        parser.error("--rounds and --processes must be >= 1, --callers >= 2")
    names = [v[0] for v in VARIANTS]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {names}")
        args.variants = wanted
    else:
        args.variants = [n for n in names if not (args.no_peers and not n.startswith(("cachewise", "floor")))]
    return args


def main(argv: list[str] | None = None) -> int:
    from cachewise.server.embedded import EmbeddedServer

    args = parse_args(argv)
    console = _console()
    prefix = f"cwstampede-{uuid.uuid4().hex[:10]}"
    started = time.perf_counter()
    embedded: EmbeddedServer | None = None
    variants = [Variant(*v) for v in VARIANTS if v[0] in args.variants]
    try:
        if args.url:
            url = args.url
            transport = describe_url(url)
        else:
            embedded, url, transport = start_tcp_server()
        server = Server(url)
        try:
            version = server.version()
            console.print(f"[bold]server[/bold]: {version}, transport: {transport}")
            console.print(
                f"python {platform.python_version()}, {os.cpu_count()} CPUs, redis-py {version_of('redis')}, "
                f"cachewise {version_of('cachewise')}; peers: cashews {version_of('cashews')}, "
                f"aiocache {version_of('aiocache')}, dogpile.cache {version_of('dogpile.cache')}",
                style="dim",
            )
            console.print(
                f"{args.processes} processes × {args.callers} callers, one cold key, origin {ORIGIN_SECONDS * 1000:.0f}"
                f" ms (simulated: a sleep); round 0 + a lone miss + {args.rounds} rounds per library",
                style="dim",
            )
            if args.url:
                console.print("external server: 'executed' also counts other clients' commands", style="yellow")
            bench = Bench(args, url, prefix, server, owns_server=embedded is not None)
            for variant in variants:
                bench.run_variant(variant)
        finally:
            if embedded is None:
                removed = cleanup_keys(url, prefix)
                console.print(f"deleted the {removed} keys this run wrote (prefix {prefix!r})", style="dim")
            server.client.close()
    finally:
        if embedded is not None:
            embedded.stop()

    done = [v for v in variants if not v.skipped]
    skipped = {v.name: v.skipped for v in variants if v.skipped}
    summaries = [summarise(v) for v in done]
    print_table(
        summaries,
        skipped,
        f"cold-key stampede, {version}: {args.processes} processes × {args.callers} callers, "
        f"{ORIGIN_SECONDS * 1000:.0f} ms origin; median of {args.rounds} rounds",
    )
    console.print(
        "loads = origin calls (ideal 1); wall = release → last answer; p50/p99 = each caller's own latency; "
        "sent = commands the clients sent (/waiter: the callers that did not load); exec = INFO commandstats delta, "
        "including the commands Lua scripts run inside one call (/waiter: minus a lone miss's, shown when every "
        "round had 1 load). Targets (cachewise rows): 1 load in every round; median wall; median sent/waiter. "
        "Floors: each caller sends one GET and nothing else (what the harness and one burst of round trips cost).",
        style="dim",
    )
    if summaries:
        print_first_rounds(summaries)
    for s in summaries:
        if s["errors"] or s["logged"]:
            console.print(
                f"  {s['variant']}: {s['errors']} callers failed ({s['first_error'] or '-'}); "
                f"{s['logged']} warnings logged ({s['logged_first'] or '-'})",
                style="yellow",
            )
        if "stats" in s:
            st = s["stats"]
            console.print(
                f"  {s['variant']} counters (median per round, all processes): hits={st['hits']:.0f} "
                f"loads={st['loads']:.0f} leases={st['leases']:.0f} waits={st['waits']:.0f} "
                f"wait_timeouts={st['wait_timeouts']:.0f} "
                f"misses={st['misses']:.0f} errors={st['errors']:.0f} refused_writes={st['refused_writes']:.0f}",
                style="dim",
            )
    traces: dict[str, dict[str, dict[str, float]]] = {}
    if args.trace:
        for v in done:
            if v.library == "cachewise" and v.rounds:
                traces[v.name] = {"rounds": trace_breakdown(v.rounds)}
                if v.cold is not None:
                    traces[v.name]["cold"] = trace_breakdown([v.cold])
        if traces:
            print_trace(traces)
    missed = [f"{s['variant']}: {k}" for s in summaries for k, ok in s.get("targets", {}).items() if ok is False]
    met = sum(ok is True for s in summaries for ok in s.get("targets", {}).values())
    console.print(
        f"cachewise targets: {met} met, {len(missed)} missed"
        + (f" ({'; '.join(missed)})" if missed else "")
        + f"; {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        doc = {
            "server": version,
            "transport": transport,
            "processes": args.processes,
            "callers_per_process": args.callers,
            "origin_ms": ORIGIN_SECONDS * 1000,
            "rounds": args.rounds,
            "targets": {"loads": TARGET_LOADS, "wall_ms": TARGET_WALL_MS, "waiter_commands": TARGET_WAITER_COMMANDS},
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": {d: version_of(d) for d in PEER_DISTS},
            "results": summaries,
            "skipped": skipped,
            "traces": traces,
            "raw_callers": {
                v.name: {r.label: r.callers for r in [*([v.cold] if v.cold else []), *v.rounds]} for v in done
            },
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
        console.print(f"raw figures written to {args.json}", style="dim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
