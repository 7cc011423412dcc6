"""Wake the callers waiting for another caller's load: one pub/sub connection per cache, shared by every waiter.

A lease holder's write (and a released lease) is published on the namespace's fill channel with the entry's key.
Waiters do not each hold a connection, and do not poll: a thread reads the channel and wakes the threads (an
``Event``) and asyncio tasks (a future, via ``call_soon_threadsafe``) waiting for that key.

A message can arrive between a waiter's ``acquire`` reply and its registering here; :meth:`FillNotifier.filled_since`
tells it so (the thread remembers when each key was last filled), and it re-reads at once instead of waiting.
When the pub/sub connection drops, every waiter is woken (messages may have been lost) and the thread reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

__all__ = ["FillNotifier", "Waiter"]

log = logging.getLogger("cachewise.notify")

_POLL = 0.05  # seconds the thread blocks reading before it looks for new subscriptions or a stop
_RECENT_MAX = 10_000
_RECENT_KEEP = 30.0
_RETRY_AFTER = 1.0  # seconds during which a failed subscription is not waited for again
_SHARD_POLL = 0.01  # sharded: each read polls one node's connection (round robin), so shorter
_MAX_SHARDS = 4096  # sharded: past this many shard channels, those not asked for in _SHARD_KEEP s are dropped
_SHARD_KEEP = 60.0


@dataclass(eq=False)
class Waiter:
    """One caller waiting for one key."""

    key: str
    event: threading.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self.loop.call_soon_threadsafe(_resolve, self.future)


def _close_quietly(*closeables: Any) -> None:
    for thing in closeables:
        if thing is not None:
            with contextlib.suppress(Exception):
                thing.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FillNotifier:
    """Listens on fill channels of one server and wakes waiters by key."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 0.5,
        pool_kwargs: dict[str, Any] | None = None,
        client: Callable[[], Any] | None = None,
        sharded: bool = False,
    ) -> None:
        self.url = url
        #: Makes the listener's client (e.g. one that asks Sentinel for the primary); None: one from ``url``.
        self._client = client
        #: Shard channels (``SSUBSCRIBE``, a Cluster's sharded pub/sub: one channel per entry, in its slot; the
        #: client is then a ``RedisCluster``), rather than classic ones.
        self.sharded = sharded
        self._asked: dict[str, float] = {}
        self.connect_timeout = connect_timeout
        self._pool_kwargs = dict(pool_kwargs or {})
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, set[Waiter]] = {}
        self._recent: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._quiet_until = 0.0
        self.reconnects = 0

    # -- subscriptions --------------------------------------------------------------------------------------------
    def ready(self, channel: str) -> bool:
        return channel in self._confirmed

    def ensure(self, channel: str, timeout: float | None = None) -> bool:
        """Subscribe to ``channel`` (once) and wait until the server confirmed it; False if it did not in time
        (waiters then fall back to short, bounded waits)."""
        if channel in self._confirmed:
            return True
        now = time.monotonic()
        if now < self._quiet_until:  # it just failed: do not make every miss pay the wait again
            return False
        deadline = now + (timeout if timeout is not None else 2 * self.connect_timeout + 0.5)
        with self._changed:
            self._wanted.add(channel)
            if self.sharded:
                self._asked[channel] = now
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._listen, name="cachewise-notify", daemon=True)
                self._thread.start()
            while channel not in self._confirmed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._quiet_until = time.monotonic() + _RETRY_AFTER
                    return False
                self._changed.wait(left)
        return True

    # -- waiting ------------------------------------------------------------------------------------------------
    def register(self, key: str, *, loop: asyncio.AbstractEventLoop | None = None) -> Waiter:
        if loop is None:
            waiter = Waiter(key, event=threading.Event())
        else:
            waiter = Waiter(key, loop=loop, future=loop.create_future())
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.key]

    def filled_since(self, key: str, since: float) -> bool:
        """Whether a fill of ``key`` arrived at or after ``since`` (a ``time.monotonic()`` reading)."""
        with self._lock:
            return self._recent.get(key, -1.0) >= since

    def wait(self, waiter: Waiter, timeout: float) -> bool:
        """Block until ``waiter`` is woken or ``timeout`` passes; True when woken."""
        assert waiter.event is not None
        try:
            return waiter.event.wait(max(0.0, timeout))
        finally:
            self.unregister(waiter)

    async def await_(self, waiter: Waiter, timeout: float) -> bool:
        """Await ``waiter`` (registered with a loop) until woken or ``timeout`` passes; True when woken."""
        assert waiter.future is not None
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), max(0.0, timeout))
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self.unregister(waiter)

    # -- the listening thread -----------------------------------------------------------------------------------
    def _listen(self) -> None:
        client: Any = None
        pubsub: Any = None
        subscribed: set[str] = set()
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    if self._client is not None:
                        client = self._client()
                    else:
                        client = redis.Redis.from_url(
                            self.url, socket_connect_timeout=self.connect_timeout, **self._pool_kwargs
                        )
                    pubsub = client.pubsub(ignore_subscribe_messages=False)
                    subscribed = set()
                with self._lock:
                    missing = self._wanted - subscribed
                if missing:
                    (pubsub.ssubscribe if self.sharded else pubsub.subscribe)(*missing)
                    subscribed |= missing
                if self.sharded:
                    message = pubsub.get_sharded_message(timeout=_SHARD_POLL)
                    if len(subscribed) > _MAX_SHARDS:
                        subscribed -= self._drop_old_shards(pubsub)
                else:
                    message = pubsub.get_message(timeout=_POLL)
                if message is not None:
                    self._handle(message)
                backoff = 0.05
            except (redis.RedisError, OSError) as exc:
                log.debug("fill notifications interrupted (%s); reconnecting", exc)
                self._lost()
                _close_quietly(pubsub, client)
                pubsub, client = None, None
                self.reconnects += 1
                self._stop.wait(backoff)
                backoff = min(1.0, backoff * 2)
        _close_quietly(pubsub, client)

    def _drop_old_shards(self, pubsub: Any) -> set[str]:
        """Unsubscribe the shard channels nobody asked for lately (an entry waited for once is rarely waited for
        again soon); the ones dropped."""
        cutoff = time.monotonic() - _SHARD_KEEP
        with self._lock:
            old = {c for c, at in self._asked.items() if at < cutoff}
            for channel in old:
                del self._asked[channel]
            self._wanted -= old
            self._confirmed -= old
        if old:
            pubsub.sunsubscribe(*old)
        return old

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("subscribe", "ssubscribe"):
            channel = message["channel"]
            with self._changed:
                self._confirmed.add(channel.decode() if isinstance(channel, bytes) else channel)
                self._changed.notify_all()
        elif kind in ("message", "smessage"):
            data = message["data"]
            key = data.decode() if isinstance(data, bytes) else str(data)
            now = time.monotonic()
            with self._lock:
                self._recent[key] = now
                if len(self._recent) > _RECENT_MAX:
                    cutoff = now - _RECENT_KEEP
                    self._recent = {k: t for k, t in self._recent.items() if t >= cutoff}
                waiters = self._waiters.pop(key, ())
            for waiter in waiters:
                waiter.wake()

    def _lost(self) -> None:
        """The connection dropped: messages may be lost, so wake everyone (they re-read) and resubscribe."""
        with self._changed:
            self._confirmed.clear()
            everyone = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        for waiter in everyone:
            waiter.wake()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        self._thread = None
        self._lost()
