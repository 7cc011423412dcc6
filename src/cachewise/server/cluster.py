"""A private local Redis Cluster from the embedded Valkey binary: ``embedded+cluster://``, tests, ``cachewise demo``.

It is Valkey's own cluster (``cluster-enabled yes`` nodes joined by ``valkey-cli --cluster create``), on free
loopback ports (each node's bus on its port + 10000), each node an :class:`~cachewise.server.embedded.EmbeddedServer`
in its own folder of one temporary directory, so it stops with the program exactly as the single embedded server
does (at exit, on SIGTERM, and when the program is killed, by the kernel).  Nothing here shards or elects: the
nodes do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..errors import EmbeddedServerError
from .embedded import EmbeddedServer, find_server_binary
from .shared import Shared

__all__ = ["EmbeddedCluster", "free_port", "release_cluster", "shared_cluster"]

#: A cluster node's bus listens on its port + this (Redis/Valkey's fixed offset).
BUS_OFFSET = 10000


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + BUS_OFFSET < 65536 and port not in taken and _free(port + BUS_OFFSET):
            taken.add(port)
            return port
    raise EmbeddedServerError("found no free loopback port pair (port and port + 10000) for a cluster node")


class EmbeddedCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on loopback ports; :attr:`url` is its
    ``redis+cluster://`` URL (every node a seed)."""

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 2000,
        maxmemory: str = "256mb",
        start_timeout: float = 30.0,
    ) -> None:
        if primaries < 3:
            raise EmbeddedServerError(f"a Redis Cluster needs at least 3 primaries, got {primaries}")
        if replicas < 0:
            raise EmbeddedServerError(f"replicas per primary must be 0 or more, got {replicas}")
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.maxmemory = maxmemory
        self.start_timeout = start_timeout
        self.nodes: list[EmbeddedServer] = []
        self.directory: str | None = None
        self._lock = threading.Lock()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        if not self.nodes:
            raise EmbeddedServerError("the embedded cluster is not started: call start() first")
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> EmbeddedCluster:
        with self._lock:
            if self.nodes:
                return self
            self.directory = tempfile.mkdtemp(prefix="cw-cluster-")
            try:
                self._start_nodes(self.directory)
                self._create()
                self.wait_ok()
            except BaseException:
                self._stop_nodes()
                raise
            return self

    def _start_nodes(self, directory: str) -> None:
        taken: set[int] = set()
        for _ in range(self.primaries * (1 + self.replicas)):
            port = free_port(taken)
            folder = os.path.join(directory, str(port))
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", os.path.join(folder, "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",  # the other shards answer while one fails over
                "--repl-diskless-sync-delay", "0",  # a replica syncs at once (Valkey waits 5 s by default), so it
                # can take over from the start: a replica that never synced is not promoted
            )  # fmt: skip
            node = EmbeddedServer(folder, maxmemory=self.maxmemory, extra_args=extra, port=port)
            self.nodes.append(node.start())

    def _create(self) -> None:
        cli = str(Path(find_server_binary()).with_name("valkey-cli"))
        if not os.access(cli, os.X_OK):
            cli = shutil.which("valkey-cli") or shutil.which("redis-cli") or cli
        args = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        args += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=self.start_timeout, check=False)
        if done.returncode != 0:
            raise EmbeddedServerError(f"valkey-cli --cluster create failed: {(done.stdout + done.stderr)[-800:]}")

    def wait_ok(self, timeout: float | None = None) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and knows every slot's owner, and every replica
        has synced with its primary (one that has not could not take over)."""
        import redis

        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while True:
            states = []
            for node in self.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                try:
                    with redis.Redis(unix_socket_path=node.socket_path, socket_timeout=1) as client:
                        info = client.execute_command("CLUSTER", "INFO")
                        role = client.info("replication")
                except redis.RedisError:
                    states.append(False)
                    continue
                text = info.decode() if isinstance(info, bytes) else str(info)
                synced = role.get("role") != "slave" or role.get("master_link_status") == "up"
                states.append("cluster_state:ok" in text and "cluster_slots_assigned:16384" in text and synced)
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"the embedded cluster did not reach cluster_state:ok ({self.ports})")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node and remove the directory; safe to call again."""
        with self._lock:
            self._stop_nodes()

    def _stop_nodes(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        self.nodes = []
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedCluster({self.primaries}+{self.primaries * self.replicas}, ports={self.ports})"


_SHARED: Shared[EmbeddedCluster] = Shared(lambda: EmbeddedCluster().start(), lambda cluster: bool(cluster.nodes))


def shared_cluster() -> EmbeddedCluster:
    """The process's ``embedded+cluster://`` cluster, started on first use; match each call with
    :func:`release_cluster` (the last release stops it)."""
    return _SHARED.take()


def release_cluster(cluster: EmbeddedCluster) -> None:
    _SHARED.release(cluster)
