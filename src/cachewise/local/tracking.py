"""Feed the local tier what the server says changed: one ``CLIENT TRACKING`` connection per server (per primary on
a Cluster), read by a thread of its own.

Each link asks for *broadcast* tracking of the namespace's prefix (``CLIENT TRACKING ON BCAST PREFIX <ns>:``): the
server then announces every change of every key under it — an entry, a namespace, group or tag counter — whoever
made it (another process, ``redis-cli``, an expiry or an eviction), without having to remember which keys each
connection read.  The price: a write of any key of the namespace (a lease, a rate-limit counter) is announced to
every process, which drops nothing when it holds no entry judged with that key.

* RESP2 (default): the link subscribes to ``__redis__:invalidate`` and redirects its own tracking there (``CLIENT
  TRACKING ON REDIRECT <its own id>``), so no second connection can break the redirection.
* RESP3: the link takes the invalidations as push messages.

Every ``max_lag / 4`` seconds the link sends ``PING <monotonic time>``; the reply comes after every invalidation the
server sent before it, so the tier (:meth:`~cachewise.local.tier.LocalTier.heard`) knows how far behind it can be.
A link that errors, is closed (``CLIENT KILL``, a restart, a failover) or stops answering empties the tier
(:meth:`~cachewise.local.tier.LocalTier.lost`) and reconnects with a growing back-off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

from .tier import LocalTier

__all__ = ["Link", "Tracker"]

log = logging.getLogger("cachewise.local")

#: ``(name, factory)``: one invalidation link; the factory makes an unconnected redis-py ``Connection``.
Link = tuple[str, Callable[[], Any]]

_CHANNEL = b"__redis__:invalidate"
_CHECK_LINKS = 1.0  # seconds between looks at the Cluster's primaries (a link per primary)


class Tracker:
    """The invalidation links of one local tier (started by :meth:`start`, again in a forked child)."""

    def __init__(
        self,
        tier: LocalTier,
        links: Callable[[], list[Link]],
        prefixes: list[str],
        *,
        protocol: int = 2,
    ) -> None:
        if protocol not in (2, 3):
            raise ValueError(f"protocol={protocol!r}: 2 (RESP2) or 3 (RESP3)")
        self.tier = tier
        self._links = links
        self.prefixes = prefixes
        self.protocol = protocol
        self.interval = max(0.002, tier.max_lag / 4)
        #: A link whose PING has not been answered for this long is dropped and opened again.
        self.dead_after = max(1.0, 4 * tier.max_lag)
        self._stop = threading.Event()
        self._threads: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._supervisor: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        #: Invalidation messages handled (for stats and tests).
        self.messages = 0
        #: Connections opened (the first, then one per reconnection).
        self.connects = 0
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(me))

    def forked(self) -> None:
        """In a forked child: the parent's values and threads stay behind (the next read starts this process's)."""
        self.tier.reset()
        self._threads.clear()
        self._supervisor = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Open the links (once per process: a forked child starts its own, with an empty tier)."""
        with self._lock:
            if self._pid == os.getpid() or self._stop.is_set():
                return
            self._pid = os.getpid()
            self._supervisor = threading.Thread(target=self._supervise, name="cachewise-local", daemon=True)
            self._supervisor.start()

    def started(self) -> bool:
        return self._pid == os.getpid()

    def close(self) -> None:
        self._stop.set()
        for thread, stop in list(self._threads.values()):
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=2.0)
        self.tier.flush()

    # -- threads --------------------------------------------------------------------------------------------------
    def _supervise(self) -> None:
        """Keep one link per server (a Cluster's primaries change with failovers)."""
        while not self._stop.is_set():
            try:
                wanted: dict[str, Callable[[], Any] | None] = dict(self._links())
            except Exception as exc:  # the topology is unknown for now: keep the links there are
                log.debug("local tier: cannot list the servers to track (%s)", exc)
                wanted = {name: None for name in self._threads}
            if set(wanted) != set(self._threads):
                for name in set(self._threads) - set(wanted):
                    _, stop = self._threads.pop(name)
                    stop.set()
                self.tier.links(wanted)
                for name, factory in wanted.items():
                    if name not in self._threads and factory is not None:
                        stop = threading.Event()
                        thread = threading.Thread(
                            target=self._follow, args=(name, factory, stop), name=f"cachewise-local {name}", daemon=True
                        )
                        self._threads[name] = (thread, stop)
                        thread.start()
            self._stop.wait(_CHECK_LINKS)

    def _follow(self, name: str, factory: Callable[[], Any], stop: threading.Event) -> None:
        backoff = 0.02
        while not stop.is_set() and not self._stop.is_set():
            conn = None
            try:
                conn = factory()
                self._open(conn)
                self.connects += 1
                backoff = 0.02
                self._read(name, conn, stop)
            except Exception as exc:
                log.debug("local tier: invalidation link %s lost (%s); the tier is flushed until it is back", name, exc)
            finally:
                self.tier.lost(name)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.disconnect()
            stop.wait(backoff)
            backoff = min(1.0, backoff * 2)

    def _open(self, conn: Any) -> None:
        conn.connect()
        prefixes = [arg for prefix in self.prefixes for arg in ("PREFIX", prefix)]
        if self.protocol == 3:
            # redis-py hands RESP3 push messages to this handler; returning them makes read_response() return them.
            conn._parser.set_invalidation_push_handler(lambda message: message)
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
            _expect_ok(conn.read_response())
            return
        conn.send_command("CLIENT", "ID")
        own = conn.read_response()
        conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", own, "BCAST", *prefixes)
        _expect_ok(conn.read_response())
        conn.send_command("SUBSCRIBE", _CHANNEL)
        conn.read_response()

    def _read(self, name: str, conn: Any, stop: threading.Event) -> None:
        tier = self.tier
        answered = monotonic()
        next_ping = 0.0
        while not stop.is_set() and not self._stop.is_set():
            now = monotonic()
            if now >= next_ping:
                conn.send_command("PING", repr(now))
                next_ping = now + self.interval
            if now - answered > self.dead_after:
                raise TimeoutError(f"no answer to PING for {now - answered:.1f} s")
            if not conn.can_read(timeout=self.interval / 2):
                continue
            message = conn.read_response(push_request=True)
            if type(message) is bytes:  # RESP3: the PING's reply
                answered = float(message)
                tier.heard(name, answered)
            elif isinstance(message, list) and message:
                kind = message[0]
                if kind == b"pong":
                    answered = float(message[1])
                    tier.heard(name, answered)
                elif kind == b"message" and message[1] == _CHANNEL:
                    self._invalidated(message[2])
                elif kind == b"invalidate":
                    self._invalidated(message[1])

    def _invalidated(self, keys: Any) -> None:
        self.messages += 1
        if keys is None:  # FLUSHDB / FLUSHALL: everything went
            self.tier.flush()
        else:
            self.tier.invalidate([k.decode(errors="replace") if type(k) is bytes else str(k) for k in keys])


def _forked(ref: weakref.ref[Tracker]) -> None:
    tracker = ref()
    if tracker is not None:
        tracker.forked()


def _expect_ok(reply: Any) -> None:
    if isinstance(reply, Exception):
        raise reply
    if reply not in (b"OK", "OK", True):
        raise RuntimeError(f"CLIENT TRACKING answered {reply!r}")
