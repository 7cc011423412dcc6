"""Lease heartbeats: a load that outlasts its lease keeps it (one load, value stored); a voided lease is never
brought back.  The keeper's own bookkeeping is tested with a recording extend function (no server)."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cachewise import Cache, Protection
from cachewise.lease_keeper import LeaseKeeper
from tests.processes import in_forked_child, run_together


# -- the keeper alone ----------------------------------------------------------------------------------------------
class Recorder:
    """Renew functions that answer from a script and signal after each call."""

    def __init__(self, answers: list[bool | Exception]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.called = threading.Semaphore(0)

    def renew(self, name: str) -> Callable[[], bool]:
        def call() -> bool:
            self.calls.append(name)
            answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
            self.called.release()
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


def test_keeper_extends_until_dropped() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper()
    held = keeper.hold(recorder.renew("k"), 60)  # due every 20 ms
    for _ in range(3):
        assert recorder.called.acquire(timeout=5)
    keeper.drop(held)
    seen = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) <= seen + 1  # at most one extension was already on its way when dropped
    assert set(recorder.calls) == {"k"} and keeper.extended >= 3 and keeper.lost == 0
    keeper.close()


def test_keeper_stops_when_the_lease_is_no_longer_ours_and_retries_after_errors() -> None:
    recorder = Recorder([ConnectionError("down"), True, False])
    keeper = LeaseKeeper()
    keeper.hold(recorder.renew("k"), 30)
    for _ in range(3):
        assert recorder.called.acquire(timeout=5)
    time.sleep(0.1)
    assert len(recorder.calls) == 3  # error: retried; True: extended; False: stopped
    assert keeper.extended == 1 and keeper.lost == 1
    keeper.close()


def test_keeper_sleeps_when_idle_and_close_stops_its_thread() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper(name="test-keeper")
    first = keeper.hold(recorder.renew("a"), 30)
    assert recorder.called.acquire(timeout=5)
    keeper.drop(first)
    time.sleep(0.05)
    calls = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) == calls  # nothing held: no calls
    keeper.hold(recorder.renew("b"), 30)  # wakes the idle thread
    assert recorder.called.acquire(timeout=5) and recorder.calls[-1] == "b"
    keeper.close()
    assert not any(t.name == "test-keeper" for t in threading.enumerate())
    keeper.hold(recorder.renew("c"), 30)  # after close: nothing is extended
    time.sleep(0.05)
    assert "c" not in recorder.calls


def test_a_shorter_lease_wakes_a_keeper_sleeping_for_a_longer_one() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper()
    keeper.hold(recorder.renew("long"), 30_000)  # the thread sleeps ~10 s for this one
    time.sleep(0.05)
    keeper.hold(recorder.renew("short"), 60)  # due in 20 ms: must not wait for the long one
    assert recorder.called.acquire(timeout=2) and recorder.calls[0] == "short"
    keeper.close()


def test_a_lease_is_kept_for_at_most_its_waiters_budget() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper()
    keeper.hold(recorder.renew("hung"), 30, for_at_most=0.1)  # due every 10 ms, for 100 ms
    time.sleep(0.3)
    calls = len(recorder.calls)
    time.sleep(0.1)
    assert len(recorder.calls) == calls and 3 <= calls <= 12  # it stopped, after extending for ~100 ms
    assert keeper.given_up == 1
    keeper.close()


def test_a_forked_child_gets_a_keeper_of_its_own() -> None:
    recorder = Recorder([True])
    keeper = LeaseKeeper()
    parent_held = keeper.hold(recorder.renew("parent"), 30)
    assert recorder.called.acquire(timeout=2)

    def child() -> bool:  # the parent's thread does not exist here, nor its leases
        mine = Recorder([True])
        keeper.hold(mine.renew("child"), 30)
        return mine.called.acquire(timeout=2) and set(mine.calls) == {"child"}

    assert in_forked_child(child)
    keeper.drop(parent_held)
    keeper.close()


# -- against real servers -------------------------------------------------------------------------------------------
def test_a_load_longer_than_its_lease_keeps_it_and_runs_once(
    server_url: str, unique_namespace: str, tmp_path: Path
) -> None:
    """4 processes x 10 threads, a 0.5 s lease, a 2 s load: without heartbeats the lease would expire four times
    over and other processes would run the load again (and the first value would be refused).  (A heartbeat more
    than two thirds of a TTL late loses the lease: 0.3 s leases lapsed now and then on a loaded CI machine.)"""
    loads, go = tmp_path / "loads", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import json, os, time
        from concurrent.futures import ThreadPoolExecutor
        from cachewise import Cache, Protection
        cache = Cache({server_url!r}, namespace={unique_namespace!r},
                      protection=Protection(lease_ttl=0.5, max_wait=30))

        def load():
            with open({str(loads)!r}, "a") as fh:
                fh.write(f"{{os.getpid()}}\\n")
            time.sleep(2.0)  # a simulated slow origin: four lease TTLs
            return {{"by": os.getpid()}}

        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda _: cache.get_or_set("report", load, ttl=60), range(10)))
        total = cache.stats().total
        print(json.dumps({{"results": results, "leases": total.leases, "refused": total.refused_writes,
                           "extended": cache._keeper.extended,
                           "late": cache._keeper.most_late}}), flush=True)
        cache.close()
        """
    )
    outputs = run_together(code, 4, go)
    late = max(out["late"] for out in outputs)
    assert len(loads.read_text().split()) == 1, f"the load ran more than once (a renewal {late:.3f} s late)"
    values = [r for out in outputs for r in out["results"]]
    assert len(values) == 40 and all(v == values[0] for v in values)
    assert sum(out["leases"] for out in outputs) == 1 and sum(out["refused"] for out in outputs) == 0
    assert sum(out["extended"] for out in outputs) >= 3  # 2 s / (0.5 s / 3), give or take scheduling
    with Cache(server_url, namespace=unique_namespace) as cache:
        assert cache.get("report") == values[0]  # the holder's value was stored


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
        assert holder._keeper.lost == 1
        assert writer.get("row", tags=("rows",)) is None
        lease = writer.keyspace.lease(writer.keyspace.entry("row"))
        assert writer.connection.sync.exists(lease) == 0
