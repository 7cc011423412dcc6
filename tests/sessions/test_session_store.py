"""Server-side sessions (issue #5): ids, sliding and absolute expiry, rotation, logout everywhere, the merge rule,
failure semantics; on the embedded Valkey and the system Redis, sync and async."""

from __future__ import annotations

import base64
import collections
import logging
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from multiprocessing.synchronize import Barrier as BarrierType
from typing import Any, cast

import pytest
import redis

from cachewise import Cache, ConfigurationError, InvalidationError, InvalidTTLError, SerializationError
from cachewise.server.embedded import EmbeddedServer
from cachewise.sessions import SessionDataError, SessionStore, is_session_id, new_session_id
from tests.modes import Mode

ID_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.fixture
def store(cache: Cache) -> SessionStore:
    return SessionStore(cache, ttl=60, absolute_ttl=3600)


def _namespace_keys(raw: redis.Redis, cache: Cache) -> list[bytes]:
    return list(raw.scan_iter(match=f"{cache.namespace}:*", count=1000))


def _created(raw: redis.Redis, store: SessionStore, sid: str) -> int:
    return int(raw.hget(store.key(sid), "m:c"))  # type: ignore[arg-type]


# -- ids ---------------------------------------------------------------------------------------------------------
def test_ids_are_256_random_bits_in_a_url_and_cookie_safe_form() -> None:
    ids = [new_session_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for sid in ids:
        assert len(sid) == 43 and set(sid) <= ID_ALPHABET and is_session_id(sid)
        assert len(base64.urlsafe_b64decode(sid + "=")) == 32  # 256 bits (>= 128 required)
    # Every position but the last (which carries 4 bits) is uniform over the 64 characters: ~6 560 each.
    counts = collections.Counter(c for sid in ids for c in sid[:-1])
    expected = 10_000 * 42 / 64
    assert len(counts) == 64 and all(0.85 * expected < n < 1.15 * expected for n in counts.values())
    assert SessionStore.new_id() != SessionStore.new_id()


def test_ids_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake(nbytes: int) -> str:
        calls.append(nbytes)
        return "x" * 43

    monkeypatch.setattr("cachewise.sessions.ids.secrets.token_urlsafe", fake)
    assert new_session_id() == "x" * 43 and calls == [32]


def test_ids_are_never_derived_from_user_data(store: SessionStore, monkeypatch: pytest.MonkeyPatch, mode: Mode) -> None:
    sessions = mode(store)
    data = {"user_id": 7, "email": "ana@example.com"}
    assert sessions.create(data) != sessions.create(data)
    fixed = new_session_id()
    monkeypatch.setattr("cachewise.sessions.ids.secrets.token_urlsafe", lambda nbytes: fixed)
    assert sessions.create(data) == fixed  # the id is exactly the random token: nothing of the data is in it


FORGED = [
    "",
    "../x",
    "abc",
    new_session_id()[:42],
    new_session_id() + "A",
    new_session_id()[:42] + "B",  # right length and alphabet, but no token_urlsafe(32) ends in "B"
    new_session_id()[:42] + "\n",
    new_session_id() + "\n",
    "é" * 43,
    "٣" * 43,  # non-ASCII digits
    "a" * 1_000_000,
    new_session_id()[:20] + "/" + new_session_id()[:22],
    "*" * 43,
    None,
    42,
    b"A" * 43,
]


@pytest.mark.parametrize("forged", FORGED, ids=range(len(FORGED)))
def test_malformed_ids_are_rejected_by_form(forged: Any) -> None:
    assert is_session_id(forged) is False and SessionStore.is_valid_id(forged) is False


def test_forged_ids_never_reach_the_server(store: SessionStore, cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    connection: Any = cache.connection
    real_send = connection.send

    def spy(command: Any) -> Any:  # every command the package sends goes through the transport's send
        sent.append(command)
        return real_send(command)

    monkeypatch.setattr(connection, "send", spy)
    for forged in FORGED:
        forged = cast(str, forged)
        assert store.get(forged) is None
        assert store.exists(forged) is False
        assert store.update(forged, {"a": 1}) is False
        assert store.replace(forged, {"a": 1}) is False
        assert store.rotate(forged) is None
        assert store.destroy(forged) is False
    assert sent == []
    assert store.get(new_session_id()) is None and sent  # the spy does see real calls


async def test_forged_ids_never_reach_the_server_async(
    store: SessionStore, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Any] = []

    async def spy(*args: Any) -> Any:
        sent.append(args)
        return None

    monkeypatch.setattr(cache.connection, "asend", spy)
    for forged in FORGED:
        forged = cast(str, forged)
        assert await store.aget(forged) is None
        assert await store.aexists(forged) is False
        assert await store.aupdate(forged, {"a": 1}) is False
        assert await store.areplace(forged, {"a": 1}) is False
        assert await store.arotate(forged) is None
        assert await store.adestroy(forged) is False
    assert sent == []


# -- basic life cycle --------------------------------------------------------------------------------------------
def test_create_get_update_replace_destroy(store: SessionStore, raw: redis.Redis, mode: Mode) -> None:
    sessions = mode(store)
    data = {"user_id": 7, "cart": [1, 2], "name": "Zoë", "prefs": {"dark": True}, "none": None}
    sid = sessions.create(data)
    assert is_session_id(sid) and sessions.exists(sid)
    got = sessions.get(sid)
    assert got == data and type(got) is dict
    assert sessions.update(sid, {"cart": [3], "new": 1}, remove=["name", "not-there"]) is True
    assert sessions.get(sid) == {"user_id": 7, "cart": [3], "prefs": {"dark": True}, "none": None, "new": 1}
    assert sessions.replace(sid, {"only": "this"}) is True
    assert sessions.get(sid) == {"only": "this"}
    # The API hides the metadata; on the server it is one hash, every value serialized on its own.
    fields = raw.hgetall(store.key(sid))
    assert set(fields) == {b"m:c", b"m:l", b"m:u", b"d:only"}
    assert sessions.destroy(sid) is True and sessions.destroy(sid) is False
    assert sessions.get(sid) is None and not sessions.exists(sid)
    assert sessions.update(sid, {"a": 1}) is False and sessions.replace(sid, {"a": 1}) is False  # never resurrected
    assert not raw.exists(store.key(sid))


def test_an_empty_session_is_not_stored(store: SessionStore, cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    sessions = mode(store)
    sid = sessions.create({})
    assert is_session_id(sid)
    assert _namespace_keys(raw, cache) == []
    assert sessions.get(sid) is None and not sessions.exists(sid)
    assert sessions.update(sid, {"a": 1}) is False  # an unknown id is never created by a write (fixation)
    assert _namespace_keys(raw, cache) == []
    # With an owner it is stored (the owner is information), with no data.
    owned = sessions.create({}, user_id=3)
    assert sessions.get(owned) == {}


def test_every_key_gets_a_ttl(store: SessionStore, cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    sessions = mode(store)
    a = sessions.create({"user_id": 1, "x": 1})
    b = sessions.create({"y": 2}, user_id="u-2")
    sessions.update(b, {"user_id": 3})
    sessions.rotate(a)
    sessions.get(b)
    sessions.replace(b, {"z": 3})
    keys = _namespace_keys(raw, cache)
    assert len(keys) >= 4
    assert all(0 < raw.pttl(k) <= 3_600_000 for k in keys)


def test_misuse_raises_with_what_to_do(store: SessionStore, cache: Cache, mode: Mode) -> None:
    sessions = mode(store)
    sid = sessions.create({"a": 1})
    with pytest.raises(SessionDataError, match="both set and removed"):
        sessions.update(sid, {"a": 2}, remove=["a"])
    with pytest.raises(SessionDataError, match="collection of keys"):
        sessions.update(sid, {}, remove="a")
    with pytest.raises(SessionDataError, match="must be str"):
        sessions.create({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(SessionDataError, match="must be a dict"):
        sessions.replace(sid, [("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="'bad'"):
        sessions.update(sid, {"bad": object()})
    with pytest.raises(SessionDataError, match="max_value_bytes"):
        sessions.update(sid, {"big": "x" * (cache.max_value_bytes or 0)})
    with pytest.raises(ValueError, match="user id"):
        sessions.create({"user_id": {"nested": 1}})
    with pytest.raises(ConfigurationError, match="prefix"):
        SessionStore(cache, prefix="a:b")
    with pytest.raises(InvalidTTLError):
        SessionStore(cache, ttl=0)
    assert sessions.get(sid) == {"a": 1}  # nothing half-written
    assert SessionStore(cache, ttl=timedelta(minutes=5), absolute_ttl=timedelta(hours=1)).ttl == 300


# -- expiry ------------------------------------------------------------------------------------------------------
def test_sliding_reads_renew_the_idle_ttl(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    store = mode(SessionStore(cache, ttl=60, sliding=True, absolute_ttl=None))
    sid = store.create({"user_id": 5, "a": 1})
    key, index = store.key(sid), store.index_key(5)
    raw.pexpire(key, 5_000)  # as if 55 s had passed
    raw.pexpire(index, 5_000)
    assert store.get(sid) == {"user_id": 5, "a": 1}
    assert 59_000 < raw.pttl(key) <= 60_000
    assert raw.pttl(index) > 59_000  # the owner's index lives as long as its sessions


def test_without_sliding_only_writes_renew(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    store = mode(SessionStore(cache, ttl=60, sliding=False))
    sid = store.create({"a": 1})
    key = store.key(sid)
    raw.pexpire(key, 5_000)
    assert store.get(sid) == {"a": 1} and store.exists(sid)
    assert raw.pttl(key) <= 5_000
    assert store.update(sid, {"b": 2})
    assert 59_000 < raw.pttl(key) <= 60_000


def test_the_absolute_lifetime_caps_every_renewal(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    store = mode(SessionStore(cache, ttl=60, absolute_ttl=1))
    sid = store.create({"a": 1})
    assert 0 < raw.pttl(store.key(sid)) <= 1_000
    # A session older than its cap is dead however it is used (the server checks its creation time).
    ancient = _created(raw, store, sid) - 2_000
    raw.hset(store.key(sid), "m:c", ancient)
    assert store.get(sid) is None and not raw.exists(store.key(sid))
    # Without a cap, age does not matter.
    uncapped = mode(SessionStore(cache, ttl=60, absolute_ttl=None))
    old = uncapped.create({"a": 1})
    raw.hset(uncapped.key(old), "m:c", 0)
    assert uncapped.get(old) == {"a": 1} and 59_000 < raw.pttl(uncapped.key(old)) <= 60_000


def test_a_session_kept_busy_still_dies_at_its_absolute_cap(cache: Cache) -> None:
    store = SessionStore(cache, ttl=1, sliding=True, absolute_ttl=2)
    sid = store.create({"a": 1})
    started = time.monotonic()
    seen: list[tuple[float, float, bool]] = []  # (sent, answered, alive), in seconds since the creation
    while (sent := time.monotonic() - started) < 2.9:
        alive = store.get(sid) is not None
        seen.append((sent, time.monotonic() - started, alive))
        time.sleep(0.3)
    # touched every 0.3 s: the 1 s idle TTL never ends it ...
    assert all(alive for _, answered, alive in seen if answered < 1.6)
    assert not any(alive for sent, _, alive in seen if sent > 2.3)  # ... but the 2 s cap does
    assert not store.exists(sid)


# -- rotation ----------------------------------------------------------------------------------------------------
def test_rotate_kills_the_old_id_and_keeps_data_owner_and_creation(cache: Cache, raw: redis.Redis, mode: Mode) -> None:
    store = mode(SessionStore(cache, ttl=60, absolute_ttl=1.5))
    sid = store.create({"user_id": 4, "cart": [1]})
    created = _created(raw, store, sid)
    time.sleep(0.4)
    new = store.rotate(sid)
    assert new is not None and is_session_id(new) and new != sid
    assert store.get(sid) is None and not store.exists(sid) and not raw.exists(store.key(sid))
    assert store.update(sid, {"x": 1}) is False and store.rotate(sid) is None  # the old id is dead for good
    assert store.get(new) == {"user_id": 4, "cart": [1]}
    assert _created(raw, store, new) == created
    # The cap still counts from the original creation: ~1.1 s left, not 1.5 s.
    assert 0 < raw.pttl(store.key(new)) <= 1_150
    assert raw.smembers(store.index_key(4)) == {new.encode()}
    assert store.destroy_user(4) == 1 and store.get(new) is None


def test_rotate_is_atomic_under_concurrency(store: SessionStore) -> None:
    # Two rotations of one id: exactly one wins.  A write racing a rotation either lands before it (and moves
    # with the session) or fails: it is never lost silently.
    for i in range(30):
        sid = store.create({"n": -1})
        barrier = threading.Barrier(3)
        results: dict[str, Any] = {}

        def rotate(
            name: str, sid: str = sid, barrier: threading.Barrier = barrier, out: dict[str, Any] = results
        ) -> None:
            barrier.wait()
            out[name] = store.rotate(sid)

        def write(
            sid: str = sid, barrier: threading.Barrier = barrier, i: int = i, out: dict[str, Any] = results
        ) -> None:
            barrier.wait()
            out["write"] = store.update(sid, {"n": i})

        threads = [threading.Thread(target=rotate, args=("r1",)), threading.Thread(target=rotate, args=("r2",))]
        threads.append(threading.Thread(target=write))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [results[r] for r in ("r1", "r2") if results[r] is not None]
        assert len(winners) == 1
        data = store.get(winners[0])
        assert data is not None and store.get(sid) is None
        assert data["n"] == (i if results["write"] else -1)


# -- logout everywhere -------------------------------------------------------------------------------------------
def test_destroy_user_destroys_every_session_of_that_user_only(
    store: SessionStore, raw: redis.Redis, mode: Mode
) -> None:
    sessions = mode(store)
    mine = [sessions.create({"user_id": 7, "device": d}) for d in ("phone", "laptop")]
    mine.append(sessions.create({"device": "tablet"}, user_id=7))
    expired = sessions.create({"user_id": 7})
    raw.delete(store.key(expired))  # as if it had expired: its id stays in the index, harmlessly
    theirs = sessions.create({"user_id": 8})
    anonymous = sessions.create({"cart": [1]})
    assert sessions.destroy_user("7") == 3  # ids are matched by their text: 7 and "7" are one user
    assert all(sessions.get(s) is None for s in mine)
    assert sessions.get(theirs) == {"user_id": 8} and sessions.get(anonymous) == {"cart": [1]}
    assert not raw.exists(store.index_key(7))
    assert sessions.destroy_user(7) == 0 and sessions.destroy_user("nobody") == 0
    odd = sessions.create({"user_id": "a b/c:d*é"})
    assert sessions.destroy_user("a b/c:d*é") == 1 and sessions.get(odd) is None
    user = uuid.uuid4()
    by_uuid = sessions.create({"x": 1}, user_id=user)
    assert sessions.destroy_user(str(user)) == 1 and sessions.get(by_uuid) is None


def test_the_owner_follows_login_and_moves_on_a_new_user(store: SessionStore, raw: redis.Redis, mode: Mode) -> None:
    sessions = mode(store)
    sid = sessions.create({"cart": [1]})  # anonymous
    rotated = sessions.rotate(sid)  # login: rotate, then record the user
    assert rotated is not None and sessions.update(rotated, {"user_id": 9})
    sid = rotated
    assert raw.smembers(store.index_key(9)) == {sid.encode()}
    assert sessions.update(sid, {"user_id": 10})  # another user: the session moves to them
    assert not raw.sismember(store.index_key(9), sid) and raw.sismember(store.index_key(10), sid)
    assert sessions.update(sid, {"user_id": None})  # clearing the key does not disown it: destroy it to log out
    assert sessions.destroy_user(9) == 0 and sessions.destroy_user(10) == 1
    # A user key of None means only user_id= names owners.
    plain = mode(SessionStore(store.cache, ttl=60, prefix="plain", user_key=None))
    assert plain.create({"user_id": 11, "a": 1}) and plain.destroy_user(11) == 0


# -- the merge rule ----------------------------------------------------------------------------------------------
def test_concurrent_updates_of_different_keys_are_all_kept_threads(store: SessionStore) -> None:
    sid = store.create({"start": True})
    barrier = threading.Barrier(8)
    failures: list[int] = []

    def work(n: int) -> None:
        barrier.wait()
        for i in range(25):
            if not store.update(sid, {f"t{n}": i, "shared": n}):
                failures.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = store.get(sid)
    assert not failures and data is not None
    assert {data[f"t{n}"] for n in range(8)} == {24}  # no key lost
    assert data["shared"] in range(8) and data["start"] is True  # same key: one of the writes, whole
    assert store.update(sid, {"shared": "last"}) and store.get(sid)["shared"] == "last"  # type: ignore[index]


def _update_worker(url: str, namespace: str, sid: str, worker: int, barrier: BarrierType) -> None:
    with Cache(url, namespace=namespace) as cache:
        store = SessionStore(cache, ttl=60, absolute_ttl=3600)
        barrier.wait(timeout=30)
        for i in range(40):
            if not store.update(sid, {f"p{worker}": i, "shared": worker}):
                raise SystemExit(3)


def test_concurrent_updates_of_different_keys_are_all_kept_processes(
    store: SessionStore, server_url: str, unique_namespace: str
) -> None:
    sid = store.create({"start": True})
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    processes = [
        ctx.Process(target=_update_worker, args=(server_url, unique_namespace, sid, n, barrier), daemon=True)
        for n in range(3)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    data = store.get(sid)
    assert data is not None and data["start"] is True
    assert [data[f"p{n}"] for n in range(3)] == [39, 39, 39] and data["shared"] in range(3)


def test_two_requests_saving_their_changes_keep_each_other(store: SessionStore, mode: Mode) -> None:
    sessions = mode(store)
    # What the middleware does: each request writes back only the keys it changed.
    sid = sessions.create({"a": 1, "b": 2, "c": 3})
    first, second = sessions.get(sid), sessions.get(sid)  # two parallel requests load the session
    assert first is not None and second is not None
    assert sessions.update(sid, {"a": 10}, remove=["c"])  # the first one changes a, deletes c
    assert sessions.update(sid, {"b": 20, "d": 4})  # the second one, loaded before, changes b, adds d
    assert sessions.get(sid) == {"a": 10, "b": 20, "d": 4}
    assert sessions.replace(sid, {**second, "b": 30}) and sessions.get(sid) == {
        "a": 1,
        "b": 30,
        "c": 3,
    }  # replace: theirs lost


# -- async -------------------------------------------------------------------------------------------------------
async def test_async_signed_writes_read_the_lineage(server_url: str, unique_namespace: str) -> None:
    async with Cache(server_url, namespace=unique_namespace, signing_key="k" * 32) as cache:
        sid = await SessionStore(cache, ttl=60).acreate({"a": 1})
        other = SessionStore(cache, ttl=60)
        assert await other.aupdate(sid, {"b": 2}) and await other.areplace(sid, {"c": 3, "b": 2})
        assert await other.aget(sid) == {"c": 3, "b": 2}
        assert await SessionStore(cache, ttl=60).aupdate(new_session_id(), {"x": 1}) is False


async def test_async_twins(store: SessionStore, raw: redis.Redis) -> None:
    sid = await store.acreate({"user_id": 21, "a": 1})
    assert await store.aget(sid) == {"user_id": 21, "a": 1} and await store.aexists(sid)
    assert store.get(sid) == {"user_id": 21, "a": 1}  # sync and async see the same sessions
    assert await store.aupdate(sid, {"b": 2}, remove=["a"])
    assert await store.areplace(sid, {"c": 3, "user_id": 21})
    new = await store.arotate(sid)
    assert new is not None and await store.aget(sid) is None and await store.aget(new) == {"c": 3, "user_id": 21}
    assert await store.adestroy(new) is True and await store.adestroy(new) is False
    assert await store.acreate({}) and await store.aupdate(new, {"x": 1}) is False
    others = [await store.acreate({"user_id": 21, "n": n}) for n in range(3)]
    assert await store.adestroy_user(21) == 3 and not any([await store.aexists(s) for s in others])
    assert await store.arotate(new) is None


# -- integrity ---------------------------------------------------------------------------------------------------
def test_foreign_or_corrupt_sessions_are_no_session(
    store: SessionStore, cache: Cache, raw: redis.Redis, caplog: pytest.LogCaptureFixture, mode: Mode
) -> None:
    sessions = mode(store)
    a, b, c = sessions.create({"a": 1}), sessions.create({"b": 1}), new_session_id()
    raw.hset(store.key(a), "d:a", b"\xff not json")  # corrupt value
    raw.hdel(store.key(b), "m:c")  # not a session we wrote
    raw.set(store.key(c), "a string", ex=60)  # another type under the name
    with caplog.at_level(logging.WARNING, logger="cachewise"):
        assert sessions.get(a) is None and sessions.get(b) is None and sessions.get(c) is None
        assert sessions.update(b, {"x": 1}) is False and sessions.update(c, {"x": 1}) is False
        assert sessions.rotate(c) is None and sessions.exists(c) is False
    assert cache.stats().functions["sessions:session"].invalid == 1
    assert all(a not in r.getMessage() for r in caplog.records)  # ids are credentials: never logged


def test_signed_values_cannot_be_moved_between_sessions(
    server_url: str, unique_namespace: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture, mode: Mode
) -> None:
    cache = Cache(server_url, namespace=unique_namespace, signing_key="k" * 32)
    with mode(cache):
        store = mode(SessionStore(cache, ttl=60))
        admin, guest = store.create({"role": "admin"}), store.create({"role": "guest"})
        assert store.get(admin) == {"role": "admin"}
        assert store.update(guest, {"n": 1})
        fresh = mode(SessionStore(cache, ttl=60))  # another process: it reads the lineage before a signed write
        assert fresh.update(guest, {"m": 2}) and fresh.get(guest) == {"role": "guest", "n": 1, "m": 2}
        rotated = fresh.rotate(admin)  # the lineage moves with the session: its values still verify
        assert rotated is not None and mode(SessionStore(cache, ttl=60)).replace(rotated, {"role": "admin", "r": 1})
        assert store.get(rotated) == {"role": "admin", "r": 1}
        admin = rotated
        raw.hset(store.key(guest), "d:role", raw.hget(store.key(admin), "d:role"))
        with caplog.at_level(logging.WARNING, logger="cachewise"):
            assert store.get(guest) is None
        assert cache.stats().functions["sessions:session"].tampered == 1
        assert all(guest not in r.getMessage() for r in caplog.records)


# -- the server fails --------------------------------------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    server = EmbeddedServer().start()
    yield server
    server.stop()


def test_a_server_that_is_gone_means_no_session_and_no_exception(
    own_server: EmbeddedServer, caplog: pytest.LogCaptureFixture, mode: Mode
) -> None:
    cache = Cache(own_server.url, namespace="sess", timeout=2.0, connect_timeout=2.0)
    store = mode(SessionStore(cache, ttl=60))
    sid = store.create({"user_id": 1, "a": 1})
    assert store.get(sid) == {"user_id": 1, "a": 1}
    own_server.stop()
    with caplog.at_level(logging.WARNING, logger="cachewise"):
        assert store.get(sid) is None
        assert store.exists(sid) is False
        assert store.update(sid, {"b": 2}) is False
        assert store.replace(sid, {"b": 2}) is False
        assert store.rotate(sid) is None
        assert is_session_id(store.create({"c": 3}))  # an id is returned; nothing was stored
        # A logout that did not happen must not pass silently.
        with pytest.raises(InvalidationError, match="retry"):
            store.destroy(sid)
        with pytest.raises(InvalidationError):
            store.destroy_user(1)
    counters = cache.stats().functions["sessions:session"]
    assert counters.errors >= 1 and counters.errors + counters.skipped == 8
    assert caplog.records and all(sid not in r.getMessage() for r in caplog.records)
    mode(cache).close()


def test_repr_shows_the_policy_not_secrets(store: SessionStore) -> None:
    assert repr(store) == (
        f"SessionStore(namespace={store.cache.namespace!r}, prefix='session', ttl=60, sliding=True, absolute_ttl=3600)"
    )
