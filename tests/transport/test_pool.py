"""The hot path's connection pool: LIFO reuse, a bound with a bounded wait, slots freed, fork safety, close.
Its logic is tested with stand-in connections (objects that record ``disconnect``); the connections themselves are
redis-py's, exercised against real servers by every other test."""

from __future__ import annotations

import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from cachewise.transport.pool import LeanPool
from tests.processes import in_forked_child


class Conn:
    made = 0

    def __init__(self) -> None:
        Conn.made += 1
        self.id = Conn.made
        self.disconnects = 0

    def disconnect(self) -> None:
        self.disconnects += 1


def test_connections_are_reused_last_in_first_out() -> None:
    pool = LeanPool(Conn, size=3, timeout=1)
    a, b = pool.get(), pool.get()
    pool.release(a)
    pool.release(b)
    assert pool.get() is b and pool.get() is a
    assert a.disconnects == b.disconnects == 0


def test_the_bound_waits_then_fails_with_advice() -> None:
    pool = LeanPool(Conn, size=2, timeout=0.2)
    pool.get(), pool.get()
    with pytest.raises(RedisConnectionError, match="raise max_connections or pool_timeout"):
        pool.get()
    pool = LeanPool(Conn, size=2, timeout=10)  # a waiter that a stalled test thread cannot make give up
    a, _b = pool.get(), pool.get()
    got: list[Conn] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get()))
    waiter.start()
    time.sleep(0.05)
    assert not got  # still waiting
    pool.release(a)  # wakes it
    waiter.join(5)
    assert got == [a]


def test_a_discarded_connection_frees_its_slot() -> None:
    pool = LeanPool(Conn, size=1, timeout=0.1)
    a = pool.get()
    pool.discard(a)
    assert a.disconnects == 1
    b = pool.get()  # a new one: the slot was freed
    assert b is not a


def test_a_failed_connect_frees_its_slot() -> None:
    calls = 0

    def make() -> Conn:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("refused")
        return Conn()

    pool = LeanPool(make, size=1, timeout=0.1)
    with pytest.raises(OSError):
        pool.get()
    assert isinstance(pool.get(), Conn)


def test_a_forked_child_never_uses_the_parents_connections() -> None:
    pool = LeanPool(Conn, size=1, timeout=0.1)
    parent = pool.get()
    pool.release(parent)

    def child() -> bool:  # a new connection; the parent's neither reused nor disconnected
        mine = pool.get()
        pool.release(parent)  # a connection of the parent process coming back here is ignored
        pool.release(mine)
        return mine is not parent and parent.disconnects == 0 and pool.get() is mine

    assert in_forked_child(child)
    assert pool.get() is parent  # the parent's pool is untouched


def test_close_disconnects_idle_and_returning_connections_and_the_pool_still_works() -> None:
    pool = LeanPool(Conn, size=2, timeout=0.1)
    a, b = pool.get(), pool.get()
    pool.release(a)
    pool.close()
    assert a.disconnects == 1 and b.disconnects == 0
    pool.release(b)  # in use at close: disconnected when it comes back, never reused
    assert b.disconnects == 1
    c = pool.get()  # like redis-py's pools: new connections on demand after a close
    assert c is not a and c is not b
    pool.release(c)
    assert pool.get() is c and c.disconnects == 0


def test_a_fork_while_another_thread_holds_the_lock_does_not_hang_the_child() -> None:
    pool = LeanPool(Conn, size=1, timeout=0.1)
    held = threading.Event()
    done = threading.Event()

    def hog() -> None:
        with pool._lock:
            held.set()
            done.wait(5)

    thread = threading.Thread(target=hog)
    thread.start()
    assert held.wait(5)
    try:
        assert in_forked_child(lambda: isinstance(pool.get(), Conn))  # the inherited lock was held: a fresh one
    finally:
        done.set()
        thread.join(5)
