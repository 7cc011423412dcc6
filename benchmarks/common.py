"""What the benchmark scripts share: a free local port, installed versions, the server's name and version, a
private embedded server on TCP (so that peers without unix-socket support can use it too), CPU pinning, closing
clients, and deleting a run's keys from a server we did not start."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import redis

from cachewise.server.embedded import EmbeddedServer

__all__ = [
    "cleanup_keys",
    "close_all",
    "describe_url",
    "free_port",
    "pin",
    "server_version",
    "start_tcp_server",
    "version_of",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def server_version(url: str) -> str:
    r = redis.Redis.from_url(url)
    try:
        info = r.info("server")
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info.get('redis_version', '?')}"
    finally:
        r.close()


def pin(server: EmbeddedServer | None, how: str) -> str:
    """Pin this process and the embedded server to CPUs; returns a description of the placement.

    On a VM, a request that wakes a process on another (idle) vCPU can cost several times the request itself, so
    an unpinned run can measure either of two very different baselines depending on where the scheduler puts the
    server; pinning makes runs comparable.
    """
    if how == "none" or server is None or server.process is None:
        return "left to the scheduler (see --pin)"
    cpus = sorted(os.sched_getaffinity(0))
    if how == "split" and len(cpus) < 2:
        raise SystemExit("--pin split needs 2 CPUs")
    client_cpu, server_cpu = cpus[0], (cpus[1] if how == "split" else cpus[0])
    os.sched_setaffinity(server.process.pid, {server_cpu})
    os.sched_setaffinity(0, {client_cpu})
    return f"client on CPU {client_cpu}, server on CPU {server_cpu}"


def start_tcp_server() -> tuple[EmbeddedServer, str, str]:
    """A private embedded Valkey on a free TCP port of 127.0.0.1: ``(server, url, transport description)``."""
    port = free_port()
    # EmbeddedServer passes "--port 0" first; a later "--port" wins in valkey's argv parsing.
    server = EmbeddedServer(extra_args=("--port", str(port), "--bind", "127.0.0.1")).start()
    return server, f"redis://127.0.0.1:{port}/0", f"tcp 127.0.0.1:{port} (embedded server started for this run)"


def describe_url(url: str) -> str:
    """How a ``--url`` server is shown in the report."""
    parts = urlsplit(url)
    return f"{parts.scheme} {parts.netloc or parts.path} (external server)"


async def close_all(closers: list[Callable[[], Any]]) -> None:
    """Call each closer, newest first (awaiting coroutines); a failing one is reported, not raised."""
    for closer in reversed(closers):
        try:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            print(f"closing {closer!r} failed: {exc}")


def cleanup_keys(url: str, prefix: str) -> int:
    """Delete every key of this run (``*prefix*``: some libraries put their own prefix first) from a server we did
    not start; never flushes."""
    r = redis.Redis.from_url(url)
    try:
        removed = 0
        batch: list[bytes] = []
        for key in r.scan_iter(match=f"*{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += r.unlink(*batch)
                batch = []
        if batch:
            removed += r.unlink(*batch)
        return int(removed)
    finally:
        r.close()
