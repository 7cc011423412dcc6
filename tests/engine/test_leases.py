"""Lease heartbeats: a load that outlasts its lease keeps it (one load, value stored); a voided lease is never
brought back.  The keeper's own bookkeeping is tested with a recording extend function (no server)."""

from __future__ import annotations

import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cachewise import Cache, Protection
from cachewise.engine.leases import LeaseKeeper
from cachewise.engine.steps import Hold
from tests.processes import in_forked_child, run_together


# -- the keeper alone ----------------------------------------------------------------------------------------------
class Recorder:
    """A renew function that answers from a script, records each lease it is asked to extend and each batch, and
    signals after each lease."""

    def __init__(self, answers: list[bool | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.batches: list[list[str]] = []
        self.called = threading.Semaphore(0)
        self.fail_next = 0  # batches to fail as a whole (the server is down)

    def __call__(self, leases: list[Any]) -> list[bool | BaseException]:
        self.batches.append(list(leases))
        if self.fail_next:
            self.fail_next -= 1
            for _ in leases:
                self.called.release()
            raise ConnectionError("down")
        out: list[bool | BaseException] = []
        for name in leases:
            self.calls.append(name)
            out.append(self.answers[min(len(self.calls), len(self.answers)) - 1])
            self.called.release()
        return out


def test_keeper_extends_until_dropped() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    held = keeper.hold("k", 60)  # due every 20 ms
    for _ in range(4):  # (the 4th call starts after the 3rd was counted)
        assert recorder.called.acquire(timeout=5)
    keeper.drop(held)
    seen = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) <= seen + 1  # at most one extension was already on its way when dropped
    assert set(recorder.calls) == {"k"} and keeper.extended >= 3 and keeper.lost == 0
    keeper.close()


def test_keep_extends_the_lease_a_load_holds_while_it_runs_even_when_it_fails() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    hold = Hold("k", "token", 60, 10.0, (), ())
    with pytest.raises(RuntimeError, match="origin"), keeper.keep(hold):
        assert recorder.called.acquire(timeout=5)  # extended while the block runs
        raise RuntimeError("origin failed")
    seen = len(recorder.batches)
    time.sleep(0.1)
    assert len(recorder.batches) <= seen + 1  # dropped on the way out (one may have been on its way)
    assert all(lease is hold for batch in recorder.batches for lease in batch)
    with keeper.keep(None):  # a load without a lease: nothing to keep
        pass
    keeper.close()


def test_keeper_stops_when_the_lease_is_no_longer_ours_and_retries_after_errors() -> None:
    recorder = Recorder([ConnectionError("down"), True, False])
    keeper = LeaseKeeper(recorder)
    keeper.hold("k", 30)
    for _ in range(3):
        assert recorder.called.acquire(timeout=5)
    time.sleep(0.1)
    assert len(recorder.calls) == 3  # error: retried; True: extended; False: stopped
    assert keeper.extended == 1 and keeper.lost == 1
    keeper.close()


def test_keeper_sleeps_when_idle_and_close_stops_its_thread() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder, name="test-keeper")
    first = keeper.hold("a", 30)
    assert recorder.called.acquire(timeout=5)
    keeper.drop(first)
    time.sleep(0.05)
    calls = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) == calls  # nothing held: no calls
    keeper.hold("b", 30)  # wakes the idle thread
    assert recorder.called.acquire(timeout=5) and recorder.calls[-1] == "b"
    keeper.close()
    assert not any(t.name == "test-keeper" for t in threading.enumerate())
    keeper.hold("c", 30)  # after close: nothing is extended
    time.sleep(0.05)
    assert "c" not in recorder.calls


def test_a_shorter_lease_wakes_a_keeper_sleeping_for_a_longer_one() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    keeper.hold("long", 30_000)  # the thread sleeps ~10 s for this one
    time.sleep(0.05)
    keeper.hold("short", 60)  # due in 20 ms: must not wait for the long one
    assert recorder.called.acquire(timeout=2) and recorder.calls[0] == "short"
    keeper.close()


def test_a_lease_is_kept_for_at_most_its_waiters_budget() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    keeper.hold("hung", 30, for_at_most=0.5)  # due every 10 ms, for 500 ms
    deadline = time.monotonic() + 5
    while not keeper.given_up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keeper.given_up == 1
    time.sleep(0.02)  # a renewal that was under way when it gave up
    calls = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) == calls  # it stopped ...
    assert 3 <= calls <= 0.5 / 0.01 + 2  # ... after extending for 500 ms (at most one renewal per 10 ms)
    keeper.close()


def test_a_forked_child_gets_a_keeper_of_its_own() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    parent_held = keeper.hold("parent", 30)
    assert recorder.called.acquire(timeout=2)

    def child() -> bool:  # the parent's thread does not exist here, nor its leases
        before = len(recorder.calls)
        keeper.hold("child", 30)
        deadline = time.monotonic() + 2
        while len(recorder.calls) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        calls = recorder.calls[before:]
        return len(calls) >= 3 and set(calls) == {"child"}

    assert in_forked_child(child)
    keeper.drop(parent_held)
    keeper.close()


def test_leases_due_together_are_extended_in_one_call() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    for name in ("a", "b", "c"):
        keeper.hold(name, 3000)  # due in 1 s, within a few µs of each other (a sixth of the TTL is 0.5 s)
    for _ in range(3):
        assert recorder.called.acquire(timeout=5)
    keeper.close()
    assert sorted(recorder.batches[0]) == ["a", "b", "c"]  # one round trip for the three


def test_a_lease_due_soon_rides_along_with_one_due_now() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder)
    keeper.hold("first", 3000)  # due in 1 s
    time.sleep(0.1)
    keeper.hold("second", 3000)  # due 0.1 s after it: within a sixth of its TTL (0.5 s)
    for _ in range(2):
        assert recorder.called.acquire(timeout=5)
    keeper.close()
    assert sorted(recorder.batches[0]) == ["first", "second"]


def test_a_failed_round_trip_is_retried_for_every_lease_in_it() -> None:
    recorder = Recorder([True])
    recorder.fail_next = 1
    keeper = LeaseKeeper(recorder)
    keeper.hold("a", 600)
    keeper.hold("b", 600)  # due within 0.1 s of "a": in its round trip, which fails
    deadline = time.monotonic() + 5
    while keeper.extended < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    keeper.close()
    failed = recorder.batches[0]
    assert failed and set(failed) <= set(recorder.calls)  # every lease of the failed round trip was renewed later
    assert {"a", "b"} <= set(recorder.calls) and keeper.lost == 0 and keeper.extended >= 2


def test_an_idle_keeper_ends_its_thread_and_the_next_load_starts_one() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(recorder, name="idle-keeper", idle=0.05)

    def threads() -> int:
        return sum(t.name == "idle-keeper" for t in threading.enumerate())

    keeper.drop(keeper.hold("a", 30))
    deadline = time.monotonic() + 5
    while threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads() == 0  # nothing held for 50 ms: the thread is gone (a cache never closed leaves none)
    keeper.hold("b", 30)
    assert recorder.called.acquire(timeout=5) and recorder.calls[-1] == "b" and threads() == 1
    keeper.close()
    assert threads() == 0


# -- against real servers -------------------------------------------------------------------------------------------
def test_a_load_longer_than_its_lease_keeps_it_and_runs_once(
    server_url: str, unique_namespace: str, tmp_path: Path
) -> None:
    """4 processes x 10 threads, a 1 s lease, a 2.5 s load: without heartbeats the lease would expire twice over
    and other processes would run the load again (and the first value would be refused).  (A heartbeat more than
    two thirds of a TTL late loses the lease: 0.3 s leases lapsed now and then on a loaded CI machine.)"""
    loads, go = tmp_path / "loads", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import json, os, time
        from concurrent.futures import ThreadPoolExecutor
        from cachewise import Cache, Protection
        cache = Cache({server_url!r}, namespace={unique_namespace!r},
                      protection=Protection(lease_ttl=1.0, max_wait=30))

        def load():
            with open({str(loads)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(2.5)  # a simulated slow origin: 2.5 lease TTLs
            return {{"by": os.getpid()}}

        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda _: cache.get_or_set("report", load, ttl=60), range(10)))
        total = cache.stats().total
        print(json.dumps({{"results": results, "leases": total.leases, "refused": total.refused_writes,
                           "extended": cache.engine.keeper.extended,
                           "late": cache.engine.keeper.most_late}}), flush=True)
        cache.close()
        """
    )
    outputs = run_together(code, 4, go)
    late = max(out["late"] for out in outputs)
    assert len(loads.read_text().split()) == 1, f"the load ran more than once (a renewal {late:.3f} s late)"
    values = [r for out in outputs for r in out["results"]]
    assert len(values) == 40 and all(v == values[0] for v in values)
    assert sum(out["leases"] for out in outputs) == 1 and sum(out["refused"] for out in outputs) == 0
    assert sum(out["extended"] for out in outputs) >= 3  # 2.5 s / (1 s / 3), give or take scheduling
    with Cache(server_url, namespace=unique_namespace) as cache:
        assert cache.get("report") == values[0]  # the holder's value was stored


def test_concurrent_loads_of_one_cache_share_their_heartbeats(server_url: str, unique_namespace: str) -> None:
    """Five slow loads of five keys at once, on one cache: their leases are extended together (one round trip of
    five EVALSHAs, not five round trips), each is kept, and each value is stored."""
    with Cache(server_url, namespace=unique_namespace, protection=Protection(lease_ttl=1.0)) as cache:
        all_loading = threading.Barrier(5)

        def load(key: str) -> str:
            all_loading.wait(10)  # every lease is held before any load goes on
            time.sleep(2.0)
            return f"value of {key}"

        keys = [f"k{i}" for i in range(5)]
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(lambda key: cache.get_or_set(key, lambda: load(key), ttl=60), keys))
        keeper = cache.engine.keeper
        assert results == [f"value of {key}" for key in keys]
        assert cache.stats().total.refused_writes == 0 and keeper.lost == 0
        assert keeper.extended >= 10  # 2 s / 0.33 s per lease, give or take scheduling
        assert keeper.round_trips < keeper.extended / 2, (keeper.round_trips, keeper.extended)
        assert [cache.get(key) for key in keys] == results


@pytest.mark.parametrize("invalidate", ["delete", "tag", "version"])
def test_a_voided_lease_is_not_brought_back(server_url: str, unique_namespace: str, invalidate: str) -> None:
    """A delete, a tag invalidation or a version bump during the load voids the lease: the heartbeat stops (and,
    for a counter that moved, gives the lease back at once), and the holder's (stale) value is refused."""
    with (
        Cache(server_url, namespace=unique_namespace, protection=Protection(lease_ttl=0.3)) as holder,
        Cache(server_url, namespace=unique_namespace) as writer,
    ):
        loading = threading.Event()

        def load() -> str:
            loading.set()
            time.sleep(0.8)  # a simulated slow origin, during which the row changes
            return "old row"

        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(holder.get_or_set("row", load, ttl=60, tags=("rows",))))
        thread.start()
        assert loading.wait(5)
        time.sleep(0.15)  # at least one heartbeat went through
        if invalidate == "delete":
            assert writer.delete("row") is False  # nothing stored yet; the lease is voided
        elif invalidate == "tag":
            writer.invalidate_tags("rows")
        else:
            writer.bump_version("row")
        thread.join(10)
        assert result == ["old row"]  # the caller still gets its load's value
        assert holder.stats().total.refused_writes == 1
        assert holder.engine.keeper.lost == 1
        assert writer.get("row", tags=("rows",)) is None
        lease = writer.keyspace.lease(writer.keyspace.entry("row"))
        assert writer.connection.sync.exists(lease) == 0
