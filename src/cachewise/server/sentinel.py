"""A private local Sentinel-managed set from the embedded Valkey binary: ``embedded+sentinel://``, tests.

It is Valkey's own Sentinel: one primary, its replicas (``--replicaof``) and the sentinels that watch them
(``valkey-server sentinel.conf --sentinel``), on free loopback ports, each process an
:class:`~cachewise.server.embedded.EmbeddedServer` in its own folder of one temporary directory, so it stops with
the program exactly as the single embedded server does (at exit, on SIGTERM, and when the program is killed, by
the kernel).  Nothing here elects or promotes: the sentinels do; this only starts them, waits for them to agree,
and asks them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import EmbeddedServerError
from .cluster import free_port
from .embedded import EmbeddedServer, _tail
from .shared import Shared

__all__ = ["EmbeddedSentinel", "release_sentinel", "shared_sentinel"]

#: Tries per process when its port, free when picked, is taken before the process binds it (another program's).
_PORT_TRIES = 3


def _ask(server: EmbeddedServer, *args: str) -> Any:
    """``server``'s reply to one command on its unix socket, or None when it does not answer (or is dead).

    Every check goes through the socket, so that none of them depends on the TCP ports the processes announce.
    """
    import redis

    if server.socket_path is None or server.process is None or server.process.poll() is not None:
        return None
    try:
        with redis.Redis(unix_socket_path=server.socket_path, socket_timeout=1, decode_responses=True) as client:
            return client.execute_command(*args)
    except redis.RedisError:
        return None


def _entries(reply: Any) -> list[dict[str, str]]:
    """``SENTINEL replicas``/``sentinels`` as dicts of strings: the flat ``[field, value, ...]`` lists of RESP2, or
    the maps redis-py makes of them (some versions do, by command name)."""
    if not isinstance(reply, list):
        return []
    entries = []
    for entry in reply:
        if isinstance(entry, list):
            entry = dict(zip(entry[::2], entry[1::2]))
        if isinstance(entry, dict):
            entries.append({str(key): str(value) for key, value in entry.items()})
    return entries


def _healthy(entry: dict[str, str]) -> bool:
    flags = set(entry.get("flags", "").split(","))
    return not flags & {"s_down", "o_down", "disconnected"}


def _info(reply: Any) -> dict[str, str]:
    """An ``INFO`` section as strings (redis-py parses it into a dict of numbers and strings)."""
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    if not isinstance(reply, str):
        return {}
    return dict(line.split(":", 1) for line in reply.splitlines() if ":" in line and not line.startswith("#"))


class EmbeddedSentinel:
    """One primary with ``replicas`` replicas, watched by ``sentinels`` sentinels (quorum 2, or 1 for a single
    sentinel), on loopback ports; :attr:`url` is its ``redis+sentinel://`` URL (the sentinels, then the service)."""

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        service: str = "cachewise",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        maxmemory: str = "256mb",
        start_timeout: float = 30.0,
    ) -> None:
        if replicas < 1:
            raise EmbeddedServerError(f"a Sentinel-managed set needs at least 1 replica to promote, got {replicas}")
        if sentinels < 1:
            raise EmbeddedServerError(f"a Sentinel-managed set needs at least 1 sentinel (3 to vote), got {sentinels}")
        if not service or any(c.isspace() for c in service) or "/" in service:
            raise EmbeddedServerError(f"the service name must be one word without '/', got {service!r}")
        self.replicas = replicas
        self.sentinels = sentinels
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.maxmemory = maxmemory
        self.start_timeout = start_timeout
        #: The data nodes: the first started as the primary, but after a failover any of them may be; see
        #: :meth:`primary`.
        self.nodes: list[EmbeddedServer] = []
        self.sentinel_nodes: list[EmbeddedServer] = []
        self.directory: str | None = None
        self._lock = threading.Lock()

    @property
    def quorum(self) -> int:
        """Sentinels that must agree the primary is down before one of them fails it over."""
        return min(2, self.sentinels)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def sentinel_ports(self) -> list[int]:
        return [node.port for node in self.sentinel_nodes]

    @property
    def url(self) -> str:
        if not self.sentinel_nodes:
            raise EmbeddedServerError("the embedded Sentinel set is not started: call start() first")
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> EmbeddedSentinel:
        with self._lock:
            if self.sentinel_nodes:
                return self
            self.directory = tempfile.mkdtemp(prefix="cw-sentinel-")
            try:
                self._start_processes(self.directory)
                self.wait_ready()
            except BaseException:
                self._stop_processes()
                raise
            return self

    def _start_processes(self, directory: str) -> None:
        taken: set[int] = set()
        primary = self._start(taken, lambda port: self._data_node(directory, port, ()))
        self.nodes.append(primary)
        replica_of = ("--replicaof", "127.0.0.1", str(primary.port))
        for _ in range(self.replicas):
            self.nodes.append(self._start(taken, lambda port: self._data_node(directory, port, replica_of)))
        # The sentinels learn the replicas from the primary's INFO, which they ask only every 10 s once connected:
        # started before the replicas are attached, they would not know them for up to 10 s.
        self._wait(self._replicas_attached, self.start_timeout, "the replicas did not attach to the primary")
        for _ in range(self.sentinels):
            self.sentinel_nodes.append(self._start(taken, lambda port: self._sentinel_node(directory, port)))

    def _start(self, taken: set[int], make: Callable[[int], EmbeddedServer]) -> EmbeddedServer:
        """Start ``make(port)`` on a free port, again on another if that one was taken meanwhile."""
        for attempt in range(_PORT_TRIES):
            try:
                return make(free_port(taken)).start()
            except EmbeddedServerError:
                if attempt == _PORT_TRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _data_node(self, directory: str, port: int, extra: tuple[str, ...]) -> EmbeddedServer:
        folder = os.path.join(directory, f"node-{port}")
        extra = (*extra, "--repl-diskless-sync-delay", "0")  # the default 5 s would delay every full sync
        return EmbeddedServer(folder, maxmemory=self.maxmemory, extra_args=extra, port=port)

    def _sentinel_node(self, directory: str, port: int) -> EmbeddedServer:
        folder = os.path.join(directory, f"sentinel-{port}")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        config = os.path.join(folder, "sentinel.conf")
        primary, service = self.nodes[0].port, self.service
        with open(config, "w") as fh:  # a sentinel rewrites its file as it learns: it must own a writable one
            fh.write(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f'dir "{folder}"\n'
                f'logfile "{os.path.join(folder, "server.log")}"\n'
                "sentinel resolve-hostnames no\n"
                "sentinel announce-hostnames no\n"
                "sentinel announce-ip 127.0.0.1\n"
                f"sentinel announce-port {port}\n"
                f"sentinel monitor {service} 127.0.0.1 {primary} {self.quorum}\n"
                f"sentinel down-after-milliseconds {service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {service} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
        extra = ("--sentinel", "--loglevel", "notice")  # notice: the log then tells each failover's steps
        return EmbeddedServer(folder, maxmemory="16mb", extra_args=extra, port=port, config_file=config)

    def stop(self) -> None:
        """Stop every process and remove the directory; safe to call again."""
        with self._lock:
            self._stop_processes()

    def _stop_processes(self) -> None:
        for node in [*self.sentinel_nodes, *self.nodes]:  # the sentinels first: they would fail over a stopping primary
            with contextlib.suppress(Exception):
                node.stop()
        self.sentinel_nodes = []
        self.nodes = []
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> EmbeddedSentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedSentinel(1+{self.replicas}, sentinels={self.sentinel_ports}, nodes={self.ports})"

    # -- asking the sentinels -----------------------------------------------------------------------------------
    def _live(self, servers: list[EmbeddedServer]) -> list[EmbeddedServer]:
        return [s for s in servers if s.process is not None and s.process.poll() is None]

    def _node(self, port: int) -> EmbeddedServer | None:
        return next((node for node in self.nodes if node.port == port), None)

    def _named_primaries(self) -> list[int | None]:
        """The primary's port as each live sentinel names it (None: it did not answer)."""
        ports: list[int | None] = []
        for sentinel in self._live(self.sentinel_nodes):
            reply = _ask(sentinel, "SENTINEL", "get-master-addr-by-name", self.service)
            ports.append(int(reply[1]) if isinstance(reply, list) and len(reply) == 2 else None)
        return ports

    def _agreed_primary(self) -> EmbeddedServer | None:
        """The data node every live sentinel names as the primary, if they agree and it answers ``ROLE`` master."""
        ports = self._named_primaries()
        if not ports or ports[0] is None or any(port != ports[0] for port in ports):
            return None
        node = self._node(ports[0])
        if node is None:
            return None
        role = _ask(node, "ROLE")
        return node if isinstance(role, list) and role and role[0] == "master" else None

    def primary(self) -> EmbeddedServer:
        """The data node that is the primary now, as the first sentinel that answers names it."""
        if not self.sentinel_nodes:
            raise EmbeddedServerError("the embedded Sentinel set is not started: call start() first")
        for port in self._named_primaries():
            if port is not None:
                node = self._node(port)
                if node is None:
                    raise EmbeddedServerError(f"the sentinels name 127.0.0.1:{port}, not a node of {self!r}")
                return node
        raise EmbeddedServerError(f"no sentinel of {self!r} answered. The logs: {self._logs()}")

    def _replicas_attached(self, primary: EmbeddedServer | None = None) -> bool:
        """Every other live data node replicates ``primary`` (default: the first) with its link up."""
        primary = primary or self.nodes[0]
        for node in self._live(self.nodes):
            if node is primary:
                continue
            info = _info(_ask(node, "INFO", "replication"))
            if info.get("master_port") != str(primary.port) or info.get("master_link_status") != "up":
                return False
        return True

    def _ready(self) -> bool:
        primary = self._agreed_primary()
        if primary is None or not self._replicas_attached(primary):
            return False
        replicas = {node.port for node in self._live(self.nodes)} - {primary.port}
        sentinels = {node.port for node in self._live(self.sentinel_nodes)}
        for sentinel in self._live(self.sentinel_nodes):
            known = _entries(_ask(sentinel, "SENTINEL", "replicas", self.service))
            if not replicas <= {int(e["port"]) for e in known if "port" in e and _healthy(e)}:
                return False
            peers = _entries(_ask(sentinel, "SENTINEL", "sentinels", self.service))
            if not sentinels - {sentinel.port} <= {int(e["port"]) for e in peers if "port" in e and _healthy(e)}:
                return False
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every live sentinel names the same primary, which answers as one, knows every live replica
        and every other sentinel, and every live replica's link to the primary is up.

        After a failover the old primary, if alive, is turned into a replica only some seconds later (the
        sentinels first wait for its config to settle): this waits for that too.
        """
        self._wait(self._ready, self.start_timeout if timeout is None else timeout, "the Sentinel set is not ready")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{what} within {timeout:.0f} s ({self!r}); give it more time (start_timeout=, timeout=) on a "
                    f"slow machine. The logs: {self._logs()}"
                )
            time.sleep(0.05)

    def _logs(self) -> str:
        """The last lines of every process's log, for an error (the directory may be gone when it is read)."""
        return "; ".join(
            f"{os.path.basename(node.directory)}: {_tail(os.path.join(node.directory, 'server.log'), 3)}"
            for node in [*self.nodes, *self.sentinel_nodes]
            if node.directory is not None
        )

    # -- failing over -------------------------------------------------------------------------------------------
    def failover(self, timeout: float = 30.0) -> EmbeddedServer:
        """Have the sentinels promote a replica now (``SENTINEL FAILOVER``); returns the new primary once every
        sentinel names it and it answers as a primary.

        A sentinel refuses while it deems no replica fit (``NOGOODSLAVE``: e.g. just after another failover) or
        one is under way (``INPROG``): this asks again until ``timeout``.
        """
        import redis

        deadline = time.monotonic() + timeout
        old = self.primary()
        while True:
            live = self._live(self.sentinel_nodes)
            if not live or live[0].socket_path is None:
                raise EmbeddedServerError(f"no sentinel of {self!r} is running")
            try:
                with redis.Redis(unix_socket_path=live[0].socket_path, socket_timeout=2) as client:
                    client.execute_command("SENTINEL", "FAILOVER", self.service)
                break
            except redis.ResponseError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"the sentinels would not fail {self.service!r} over within {timeout:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.1)
        return self.wait_promoted(old.port, max(0.0, deadline - time.monotonic()))

    def kill_primary(self) -> EmbeddedServer:
        """SIGKILL the primary's process, as a crash would end it (no shutdown, no goodbye); returns that node."""
        node = self.primary()
        if node.process is None:
            raise EmbeddedServerError(f"the primary {node!r} is not a process this object started")
        node.process.kill()
        node.process.wait(timeout=5)
        return node

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> EmbeddedServer:
        """Wait until every live sentinel names a primary other than ``old_port`` and it answers ``ROLE`` as a
        primary; returns it.  After :meth:`kill_primary`, this takes down_after_ms, then a vote, then the
        promotion: a few seconds."""
        found: list[EmbeddedServer] = []

        def promoted() -> bool:
            node = self._agreed_primary()
            if node is None or node.port == old_port:
                return False
            found.append(node)
            return True

        self._wait(promoted, timeout, f"no replica was promoted in place of 127.0.0.1:{old_port}")
        return found[-1]


_SHARED: Shared[EmbeddedSentinel] = Shared(lambda: EmbeddedSentinel().start(), lambda it: bool(it.sentinel_nodes))


def shared_sentinel() -> EmbeddedSentinel:
    """The process's ``embedded+sentinel://`` set, started on first use; match each call with
    :func:`release_sentinel` (the last release stops it)."""
    return _SHARED.take()


def release_sentinel(sentinel: EmbeddedSentinel) -> None:
    _SHARED.release(sentinel)
