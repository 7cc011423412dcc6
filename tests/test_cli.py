"""The ``cachewise`` command line and the demo it runs, end to end on real servers."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner

from cachewise import __version__
from cachewise.cli import app
from cachewise.demo import TITLES, DemoResult, DemoSizes, run_demo
from cachewise.demo.data import DataSizes, fetch_product, open_database, remove_database
from tests.conftest import client_for

QUICK = DemoSizes.quick()


def namespace_keys(url: str, namespace: str) -> list[bytes]:
    client = client_for(url)
    try:
        return list(client.scan_iter(match=f"{namespace}:*", count=1000))
    finally:
        client.close()


@pytest.fixture
def output() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def quiet(output: io.StringIO) -> Console:
    """A console that writes to ``output``."""
    return Console(file=output, width=120)


@pytest.mark.slow
def test_run_demo_measures_every_story(
    server_url: str, unique_namespace: str, quiet: Console, output: io.StringIO
) -> None:
    result: DemoResult = run_demo(url=server_url, namespace=unique_namespace, sizes=QUICK, console=quiet)

    # 1. a hit is faster than the query it replaces
    assert result.hit_ms < result.db_ms
    assert result.speed.db.count == QUICK.db_samples and result.speed.hit.count == QUICK.hit_samples
    # 2. 1000 requests for one product: one database query with the cache, 1000 without
    assert QUICK.requests == 1000
    assert result.db_queries_for_1000 == 1
    assert result.burst.uncached_db_queries == 1000
    assert result.burst.cached_ms < result.burst.uncached_ms
    # 3. the same requests all at once on a cold key: one query with leases, one per request without
    assert result.stampede.protected_queries == 1
    assert result.stampede.naive_queries == QUICK.requests
    assert result.stampede.waiters >= 1
    # 7. the cache server goes down mid-run: every answer right, the breaker opens, hits come back after the restart
    up, down, refill, back = result.outage.phases
    assert result.outage.wrong_answers == 0 and result.outage.breaker_opens >= 1
    assert up.db_queries == 0 and down.db_queries == QUICK.outage_calls and back.db_queries == 0
    assert refill.db_queries <= 10  # at most one load per product while the empty server refills
    # 8-9. rate limiting and sessions
    limited = result.rate_limit
    assert (limited.allowed, limited.refused) == (100, limited.requests - 100) and limited.retry_after > 0
    assert limited.naive_key_ttl_ms == -1 and limited.limiter_keys_without_ttl == 0
    assert result.sessions.id_chars >= 22 and result.sessions.renewed
    assert result.sessions.old_id_dead_after_rotate and result.sessions.destroyed_everywhere == 2
    # 10-11. feature store and dashboard
    assert result.features.entities == QUICK.users or result.features.entities > 0
    assert result.features.get_p99_ms > 0 and result.features.freshness_s is not None
    board = result.dashboard
    assert board.naive_executions == board.viewers == 50 and board.cached_executions == 1
    assert down.skipped > 0 and down.breaker == "open" and back.breaker == "closed"
    # 3. TTL: a hit before expiry, the loader again after; every TTL is where it should be
    ttl = result.ttl
    assert (ttl.loads_before_expiry, ttl.loads_after_expiry) == (1, 1)
    assert 0 < ttl.short_pttl_ms <= 1000
    assert 295_000 < ttl.product_pttl_ms <= 300_000
    assert 0 < ttl.until_next_hour_s <= 3600
    assert abs(ttl.hourly_pttl_ms - 1000 * ttl.until_next_hour_s) < 5000
    assert 50_000 <= ttl.jitter_min_ms < ttl.jitter_max_ms <= 66_000
    # 4. the naive update serves a stale price; write-through and delete-on-write do not
    writes = result.writes
    assert writes.stale_price_served
    assert writes.write_through_price_ok and writes.write_through_read_queries == 0
    assert writes.delete_on_write_price_ok and writes.delete_on_write_read_queries == 1
    # 5. one bump, or one tag invalidation, turns every cached product into a miss
    inv = result.invalidation
    assert inv.products == QUICK.versioned
    assert inv.warm_loads == 0
    assert inv.bump_loads == QUICK.versioned
    assert inv.tags_loads == QUICK.versioned
    # 12. the local tier: a hit from memory beats a server hit, and another process's writes reach it
    local = result.local
    assert local.local_hit.median_ms < local.server_hit.median_ms and local.local_hits >= QUICK.hit_samples
    assert 0 < len(local.delays) <= local.writes and local.delay_ms(0.99) < 1000
    # 6. the stats saw it all, and no server error
    stats = result.stats
    assert stats.total.errors == 0
    (get_product,) = [c for name, c in stats.functions.items() if name.endswith("get_product")]
    assert get_product.hits >= QUICK.hit_samples + QUICK.requests - 1
    assert get_product.loads > 0
    # 7. every key had a TTL; then the demo removed its keys from this server (it outlives the demo)
    assert result.audit.keys > 0
    assert result.keys_without_ttl == 0
    assert result.keys_deleted >= result.audit.keys
    assert namespace_keys(server_url, unique_namespace) == []

    printed = output.getvalue()
    for title in TITLES:
        assert title in printed
    assert "all have a TTL" in printed


@pytest.mark.slow
def test_cli_demo_quick(server_url: str, unique_namespace: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--quick", "--url", server_url, "--namespace", unique_namespace])
    assert result.exit_code == 0, result.output
    for title in TITLES:
        assert title in result.output
    assert "all have a TTL" in result.output
    assert "0 keys without a TTL" in result.output
    assert namespace_keys(server_url, unique_namespace) == []


def test_cli_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cachewise {__version__}"


def test_cli_demo_unreachable_server_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["demo", "--quick", "--url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "cannot reach the cache server" in result.output
    assert "Traceback" not in result.output


def test_cli_demo_refuses_a_database_it_did_not_create(tmp_path: Path) -> None:
    path = tmp_path / "precious.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    result = CliRunner().invoke(app, ["demo", "--quick", "--db", str(path)])
    assert result.exit_code == 1
    assert "did not create" in result.output
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]


def test_database_is_deterministic_and_parametrised(tmp_path: Path, quiet: Console) -> None:
    sizes = DataSizes(products=50, users=20, purchases=2000, seed=7)
    pages = []
    for name in ("a.sqlite", "b.sqlite"):
        db, generated = open_database(tmp_path / name, sizes, quiet)
        assert generated
        pages.append(fetch_product(db, 3))
        assert fetch_product(db, 10**9) is None
        assert fetch_product(db, "3 OR 1=1") is None  # type: ignore[arg-type]  # a value, never SQL text
        db.close()
    assert pages[0] == pages[1] and pages[0] is not None
    assert pages[0]["category_size"] == 3  # products 3, 23 and 43
    db, generated = open_database(tmp_path / "a.sqlite", sizes, quiet)  # same data: reused, not regenerated
    db.close()
    assert not generated
    remove_database(tmp_path / "a.sqlite")
    assert not (tmp_path / "a.sqlite").exists()


def _valkey_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "valkey-server"], capture_output=True, text=True, check=False).stdout
    return {int(pid) for pid in out.split()}


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
def test_demo_subprocess_on_the_embedded_default_leaves_no_server() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CACHEWISE_URL"}
    env["COLUMNS"] = "200"  # one line per path in rich's output
    before = _valkey_pids()
    done = subprocess.run(
        [sys.executable, "-m", "cachewise.cli", "demo", "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded://" in done.stdout
    for title in TITLES:
        assert title in done.stdout
    found = re.search(r"valkey-server on unix://(\S+/valkey\.sock)", done.stdout)
    assert found, done.stdout
    socket_path = found.group(1)
    # Other test sessions may start servers meanwhile: only a new process serving the demo's socket is a leak.
    leaked = [pid for pid in _valkey_pids() - before if socket_path in _command_line(pid)]
    assert leaked == []
    assert not Path(socket_path).parent.exists()


def test_features_materialize_command(server_url: str, unique_namespace: str, tmp_path: Path) -> None:
    import sqlalchemy

    db = tmp_path / "shop.sqlite3"
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE purchases (user_id INTEGER, amount REAL)"))
        conn.execute(
            sqlalchemy.text("INSERT INTO purchases VALUES (:u, :a)"),
            [{"u": u, "a": float(a)} for u in range(1, 51) for a in (10, 20)],
        )
    engine.dispose()
    query = tmp_path / "features.sql"
    query.write_text("SELECT user_id, avg(amount) AS avg_ticket, count(*) AS purchases FROM purchases GROUP BY user_id")
    args = ["features", "materialize", "--database", f"sqlite:///{db}", "--sql", str(query), "--entity", "user_id"]
    args += ["--ttl", "2h", "--url", server_url, "--namespace", unique_namespace]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "materialised 50 user entities" in result.output
    client = client_for(server_url)
    try:
        stored = client.hgetall(f"{unique_namespace}:features:user:7")
        assert stored[b"avg_ticket"] == b"15.0" and stored[b"purchases"] == b"2"
        assert 7100 < client.ttl(f"{unique_namespace}:features:user:7") <= 7200
    finally:
        client.close()
    bad = CliRunner().invoke(app, [*args[:-4], "--ttl", "soon", "--url", server_url])
    assert bad.exit_code != 0 and "not a duration" in bad.output


@pytest.mark.parametrize("kind", ["--cluster", "--sentinel"])
def test_server_runs_a_shared_local_topology_until_stopped(kind: str, unique_namespace: str) -> None:
    """``cachewise server --cluster`` (or ``--sentinel``) prints a URL that other processes share, and stops every
    server it started when it is told to."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "from cachewise.cli import main; main()", "server", kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("serving redis+"), line
        url = line.split(" ", 1)[1]
        _shared_by_two_processes(url, unique_namespace)
        _stops_on(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    host, port = url.split("://", 1)[1].split(",")[0].split("/")[0].rsplit(":", 1)
    with pytest.raises(redis.ConnectionError):  # nothing left listening
        redis.Redis(host=host, port=int(port), socket_connect_timeout=1).ping()


@pytest.mark.parametrize("how", ["--port", "--unix", "--dir"])
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_server_runs_one_shared_server_until_stopped(
    how: str, stop: str, unique_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``cachewise server --port P`` / ``--unix PATH`` / ``--dir D``: the URL it prints is shared by two other
    processes (one writes, one reads), and Ctrl-C (SIGINT) or SIGTERM stops it with no server process left."""
    import signal
    import subprocess
    import sys

    from cachewise.server.cluster import free_port

    place = tmp_path_factory.mktemp("srv")
    value = {"--port": str(free_port()), "--unix": str(place / "shared.sock"), "--dir": str(place / "data")}[how]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cachewise.cli import main; main()", "server", how, value],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        expected = {
            "--port": f"redis://127.0.0.1:{value}",
            "--unix": f"unix://{value}",
            "--dir": f"embedded://{value}",
        }[how]
        assert line == f"serving {expected}", line
        _shared_by_two_processes(line.split(" ", 1)[1], unique_namespace)
        mark = {"--port": f"127.0.0.1:{value}", "--unix": value, "--dir": f"{value}/valkey.sock"}[how]
        server_pids = _server_pids(mark)
        assert len(server_pids) == 1, server_pids
        _stops_on(proc, getattr(signal, stop))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert _server_pids(mark) == []  # no server left behind


def _shared_by_two_processes(url: str, namespace: str) -> None:
    """One process writes a key at ``url``, another one reads it back."""
    for code in ("assert c.set('shared', 41, ttl=30)", "assert c.get('shared') == 41"):
        script = f"from cachewise import Cache\nwith Cache({url!r}, namespace={namespace!r}) as c:\n    {code}\n"
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def _stops_on(proc: subprocess.Popen[str], signum: int) -> None:
    """``cachewise server`` (``proc``) stops cleanly on ``signum``."""
    proc.send_signal(signum)
    assert proc.wait(30) == 0
    assert "stopped" in proc.stdout.read()


def _server_pids(mark: str) -> list[int]:
    """The valkey-server processes whose command line names ``mark`` (a port or a socket path)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()  # the server retitles itself: "valkey-server 127.0.0.1:P" / "unixsocket:PATH"
        except OSError:
            continue
        if b"valkey-server" in cmdline.split(b"\0")[0] and mark.encode() in cmdline:
            found.append(int(pid))
    return found
