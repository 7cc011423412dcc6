"""Every Lua script touches only the keys its call declares in ``KEYS``: on a Cluster, a script may only touch the
keys it declares, all in one slot.  And the keys of every call share one slot, except for the two scripts whose
keys are independent of each other (``counters.lua``, ``materialize.lua``: a Cluster router splits them by slot).

Checked on real servers with ACLs, through the public API: each command the package sends is run by a user that may
touch exactly the keys the command declares (``ACL SETUSER ... resetkeys ~key ...``, set afresh for every command).
A script that builds a key from ``ARGV`` (or from a value it read) is refused, inside the script too.  The
scenarios drive every script's branches (leases, waits, refreshes, versions, tags, sessions with owners, rotations,
logouts, rate limits, feature batches), and a last check makes sure every ``.lua`` file of the package ran.  A
static check then reads every script: a key argument of ``redis.call`` is never built by concatenation or from
``ARGV``.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from cachewise import Cache, FeatureStore, Protection, RateLimiter, SessionStore
from cachewise.executor import Executor, Failed
from cachewise.features.feature_store import _MATERIALIZE
from cachewise.transport.command import Command

SRC = Path(__file__).resolve().parents[1] / "src" / "cachewise"
#: Files prepended to other scripts (never called on their own).
PRELUDES = {"entry.lua", "common.lua"}
#: Scripts whose keys are independent of each other (each handled alone): the only ones whose keys may span slots.
PER_KEY = {"counters.lua", "materialize.lua"}


#: What a server answers for a key outside the user's ACL: NOPERM for a command, this for a command inside a script.
_REFUSED = re.compile(r"NOPERM|can't access at least one of the keys|[Nn]o permissions to access a key")


def _glob_escape(key: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", key)


class DeclaredKeysOnly:
    """Runs every command of the process as an ACL user allowed exactly the keys the command declares."""

    def __init__(self, url: str) -> None:
        self.user = f"cwkeys-{uuid.uuid4().hex[:10]}"
        self.admin = redis.Redis.from_url(url)
        self.admin.execute_command("ACL", "SETUSER", self.user, "on", ">pw", "resetkeys", "&*", "+@all")
        self.client = redis.Redis.from_url(url, username=self.user, password="pw")
        self.lock = threading.Lock()
        self.ran: set[str] = set()
        self.violations: list[str] = []
        #: Script calls whose keys span hash slots (a Cluster would refuse them).
        self.cross_slot: list[str] = []
        self.commands = 0

    def send(self, command: Command) -> Any:
        for keys, script in zip(command.keys, command.scripts):
            if script is not None and script.name not in PER_KEY and len({key_slot(k.encode()) for k in keys}) > 1:
                self.cross_slot.append(f"{command.name} ({script.name}): {keys}")
        with self.lock:  # the keys allowed are the user's: one command at a time
            for script in dict.fromkeys(s for s in command.scripts if s is not None):
                self.admin.execute_command("SCRIPT", "LOAD", script.source)
                self.ran.add(script.name)
            rules = ["~" + _glob_escape(k) for k in command.all_keys()]
            self.admin.execute_command("ACL", "SETUSER", self.user, "resetkeys", *rules)
            conn = self.client.connection_pool.get_connection()
            try:
                conn.send_packed_command([command.payload])
                replies = []
                for _ in range(command.count):
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
            except BaseException:
                conn.disconnect()
                raise
            finally:
                self.client.connection_pool.release(conn)
            self.commands += 1
        for reply in replies:
            if isinstance(reply, redis.exceptions.NoPermissionError) or (
                isinstance(reply, redis.ResponseError) and _REFUSED.search(str(reply))
            ):
                self.violations.append(f"{command.name}: {reply}")
        if command.strict and any(isinstance(r, redis.ResponseError) for r in replies):
            return Failed(next(r for r in replies if isinstance(r, redis.ResponseError)))
        return replies[0] if command.count == 1 else replies

    def close(self) -> None:
        self.client.close()
        self.admin.execute_command("ACL", "DELUSER", self.user)
        self.admin.close()


pytestmark = pytest.mark.one_server(
    "an ACL user per command on one server; the cross-slot check it makes is the Cluster's rule, and holds everywhere"
)


@pytest.fixture
def declared(server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeclaredKeysOnly]:
    guard = DeclaredKeysOnly(server_url)
    monkeypatch.setattr(Executor, "attempt", lambda self, command, scope=None: guard.send(command))
    try:
        yield guard
    finally:
        guard.close()


def _scripts_of_the_package() -> set[str]:
    return {p.name for p in SRC.rglob("*.lua")} - PRELUDES


def test_every_script_touches_only_its_declared_keys(
    declared: DeclaredKeysOnly, server_url: str, unique_namespace: str
) -> None:
    with Cache(server_url, namespace=unique_namespace, protection=Protection(lease_ttl=0.3)) as cache:
        # entries: plain writes (with a version), tags, reads, misses under a lease, refreshes, deletes, bumps
        assert cache.set("product:1", {"v": 1}, ttl=30, tags=("t", "u"), version=3)
        assert cache.get("product:1") == {"v": 1}  # tags the reader did not name: the second read
        assert cache.get_or_set("product:2", lambda: 2, ttl=30, tags=("t",)) == 2
        assert cache.get_or_set("x{brace}y", lambda: "b", ttl=30) == "b"
        for _ in range(2):  # the second call is a hit that XFetch (with a huge beta) refreshes at once
            assert cache.get_or_set("early", lambda: time.sleep(0.02) or 1, ttl=30, early_refresh=1e9) == 1
        assert cache.get_or_set("stale", lambda: 1, ttl=0.01, stale_ttl=30) == 1
        time.sleep(0.02)
        assert cache.get_or_set("stale", lambda: 2, ttl=30, stale_ttl=30) in (1, 2)

        def slow() -> str:
            time.sleep(0.5)  # longer than a third of the lease: heartbeats (extend) run
            return "slow"

        results: list[str] = []
        threads = [threading.Thread(target=lambda: results.append(cache.get_or_set("k", slow, ttl=30))) for _ in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == ["slow", "slow"]

        def boom() -> str:
            raise RuntimeError("origin down")

        with pytest.raises(RuntimeError):
            cache.get_or_set("failing", boom, ttl=30)  # the lease is given back (release)
        assert cache.invalidate_tags("t", "nope") == 1 and cache.bump_version("product") == 1
        assert cache.delete("product:2") is True and cache.ttl("k") is not None
        with Cache(server_url, namespace=unique_namespace + "-small", max_value_bytes=10) as small:
            assert small.get_or_set("big", lambda: "x" * 100, ttl=30) == "x" * 100  # release, skip
            small.clear()

        # rate limits: several limits of one identity, a peek, a reset
        limiter = RateLimiter(cache, limit=5, period=10, algorithm="sliding_window", name="api")
        assert limiter.hit("ip:1").allowed and limiter.peek("ip:1").remaining == 4
        limiter.reset("ip:1")

        # sessions: create with an owner, read, update (moving the owner), replace, rotate, destroy, log out
        store = SessionStore(cache, ttl=60, absolute_ttl=None)
        sid = store.create({"user_id": 7, "a": 1})
        assert store.get(sid) == {"user_id": 7, "a": 1}
        assert store.update(sid, {"user_id": 8}) and store.replace(sid, {"user_id": 8, "b": 2})
        new = store.rotate(sid)
        assert new is not None and store.exists(new)
        other = store.create({"c": 1}, user_id=8)
        assert store.destroy(other) and store.destroy_user(8) == 1

        # the feature store: reads (materialisation streams on its own connection: checked below)
        features = FeatureStore(cache, entity="user", ttl=60)
        assert features.get_many([1, 2]) == [None, None] and features.freshness(1) is None
        cache.clear()
    assert declared.violations == []
    assert declared.cross_slot == []
    assert declared.commands > 40


def test_the_feature_batch_touches_only_its_entities(
    declared: DeclaredKeysOnly, server_url: str, unique_namespace: str
) -> None:
    with Cache(server_url, namespace=unique_namespace) as cache:
        store = FeatureStore(cache, entity="user", ttl=60)
        payload = store._encoder.encode([{"user_id": i, "score": i} for i in range(5)])
        keys = [store.key(i) for i in range(5)]
        batch = Command("materialize", [payload], [tuple(keys)], [_MATERIALIZE])
        assert declared.send(batch) == 5
        cache.clear()
    assert declared.violations == []


def test_a_script_reaching_an_undeclared_key_is_caught(
    declared: DeclaredKeysOnly, server_url: str, unique_namespace: str
) -> None:
    """The check itself: a script that builds a key from ARGV is refused."""
    from cachewise.transport.scripts import Script

    sneaky = Script(f"return redis.call('GET', ARGV[1]) -- {unique_namespace}", "sneaky.lua")
    declared.send(Command.script("sneaky", sneaky, [f"{unique_namespace}:a"], [f"{unique_namespace}:b"]))
    assert declared.violations and _REFUSED.search(declared.violations[0])
    declared.violations.clear()


def test_every_script_of_the_package_was_run(server_url: str, unique_namespace: str) -> None:
    """Run the scenario above again and compare what ran with the scripts on disk (none left unchecked)."""
    guard = DeclaredKeysOnly(server_url)
    real = Executor.attempt
    try:
        Executor.attempt = lambda self, command, scope=None: guard.send(command)  # type: ignore[method-assign]
        test_every_script_touches_only_its_declared_keys(guard, server_url, unique_namespace)
        test_the_feature_batch_touches_only_its_entities(guard, server_url, unique_namespace)
    finally:
        Executor.attempt = real  # type: ignore[method-assign]
        guard.close()
    assert _scripts_of_the_package() <= guard.ran, _scripts_of_the_package() - guard.ran


_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'\s*,\s*([^,)]*)")
#: Commands whose first argument is not a key.
_NOT_KEYED = {"TIME", "PUBLISH", "SCRIPT", "INFO"}


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.lua")), ids=lambda p: p.name)
def test_no_script_builds_a_key(path: Path) -> None:
    for match in _CALL.finditer(path.read_text(encoding="utf-8")):
        command, key = match.group(1).upper(), match.group(2).strip()
        if command in _NOT_KEYED:
            continue
        assert ".." not in key and "ARGV" not in key, f"{path.name}: {match.group(0)} builds its key"
