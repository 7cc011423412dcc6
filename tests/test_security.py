"""Security: pickle only when signed, tampered values never decoded, namespaces isolated, passwords/ACL/TLS servers,
and no credential in any log line, repr or exception.

The password, ACL and TLS tests start Debian's ``redis-server`` themselves (the embedded Valkey build has no TLS) on
a free port of 127.0.0.1, in a temporary directory, and stop it at teardown.  Certificates are made by the test
with the ``openssl`` command.  Without ``redis-server``/``openssl`` (or a ``redis-server`` built without TLS) these
tests are skipped locally and fail in CI (``CI=true``), where they are required.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from cachewise import MISSING, Cache, ConfigurationError, InvalidationError
from cachewise.demo.namespace import audit_ttls
from cachewise.entries.envelope import payload_of
from cachewise.serializers import PickleSerializer
from cachewise.signing import MAC_BYTES, Signer
from cachewise.transport.urls import redact
from tests.conftest import drop_namespace, keys_without_ttl

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(tool: str) -> str:
    """The path of ``tool``: skipped locally when it is missing, a failure in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool!r} is not on PATH"
        if IN_CI:
            pytest.fail(f"{message}; CI must provide it (these security tests are required there)")
        pytest.skip(message)
    return path


def _leaks(texts: list[str], secret_values: list[str]) -> list[str]:
    """The texts that contain any of the secrets (there should be none)."""
    return [t for t in texts if any(s in t for s in secret_values)]


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = []
    for record in caplog.records:
        out.append(record.getMessage())
        if record.exc_info:
            out.append("".join(traceback.format_exception(*record.exc_info)))
    return out


def _exception_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]


# == 1. pickle is opt-in, JSON is the default ==========================================================================
def test_json_is_the_default_serializer(server_url: str, unique_namespace: str) -> None:
    with Cache(server_url, namespace=unique_namespace) as cache:
        assert cache.serializer.name == "json"
        cache.set("k", {"a": 1}, ttl=30)
        assert cache.get("k") == {"a": 1}


@pytest.mark.parametrize("serializer", ["pickle", PickleSerializer()], ids=["name", "instance"])
def test_pickle_is_refused_without_a_signing_key(server_url: str, unique_namespace: str, serializer: Any) -> None:
    with pytest.raises(ConfigurationError, match="signing_key"):
        Cache(server_url, namespace=unique_namespace, serializer=serializer)


@pytest.mark.parametrize("key", ["", "short", b"0123456789abcde"])
def test_a_weak_signing_key_is_refused(server_url: str, unique_namespace: str, key: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="signing_key"):
        Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key)


def test_the_signing_key_is_in_no_repr(server_url: str, unique_namespace: str) -> None:
    key = secrets.token_hex(32)
    with Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key) as cache:
        assert cache.serializer.name == "pickle"
        texts = [repr(cache), str(cache), repr(cache.signer), repr(cache.serializer), repr(cache.stats())]
        assert not _leaks(texts, [key])


# == 2. a tampered pickle is never unpickled ===========================================================================
class _Touch:
    """Unpickling this runs a shell command (``os.system``) that creates ``marker``: what an attacker would store."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f": > {shlex.quote(str(self.marker))}",))  # a shell redirection creates the file


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Touch(marker), protocol=pickle.HIGHEST_PROTOCOL)


def _head_and_signed(stored: bytes) -> tuple[bytes, bytes]:
    """(everything up to the payload, the signed payload = MAC + serialized value) of a stored entry."""
    _, signed = payload_of(stored)
    return stored[: len(stored) - len(signed)], signed


def _replace_payload(raw: redis.Redis, entry: str, make: Callable[[bytes], bytes]) -> None:
    """Keep the entry's header (so the read gets as far as the signature check) and replace its payload."""
    stored = raw.get(entry)
    assert isinstance(stored, bytes), f"nothing stored under {entry}"
    head, signed = _head_and_signed(stored)
    raw.set(entry, head + make(signed), keepttl=True)


@pytest.fixture
def loads_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every payload handed to ``pickle.loads`` during the test (it still unpickles)."""
    calls: list[bytes] = []
    real = pickle.loads

    def spy(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(bytes(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(pickle, "loads", spy)
    return calls


def test_the_malicious_payload_is_real(tmp_path: Path) -> None:
    """Control: unpickling the payload used below does create the file (in a child process)."""
    marker = tmp_path / "control-pwned"
    code = "import pickle, sys; pickle.loads(bytes.fromhex(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, _evil_pickle(marker).hex()], check=True, timeout=60)
    assert marker.exists()


#: (evil pickle, the original signed payload, the entry, the cache's signing key) -> a forged signed payload
_FORGERIES: dict[str, Callable[[bytes, bytes, str, str], bytes]] = {
    "garbage-mac": lambda evil, signed, entry, key: os.urandom(MAC_BYTES) + evil,
    "original-mac": lambda evil, signed, entry, key: signed[:MAC_BYTES] + evil,
    "mac-with-another-key": lambda evil, signed, entry, key: Signer(secrets.token_hex(32)).sign(entry, b"p", evil),
    "mac-of-another-entry": lambda evil, signed, entry, key: Signer(key).sign(entry + "-elsewhere", b"p", evil),
    "no-mac": lambda evil, signed, entry, key: evil,
    "truncated": lambda evil, signed, entry, key: signed[: MAC_BYTES - 1],
}


@pytest.mark.parametrize("forgery", list(_FORGERIES))
def test_a_tampered_pickle_is_a_miss_never_unpickled(
    server_url: str,
    unique_namespace: str,
    raw: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loads_calls: list[bytes],
    forgery: str,
) -> None:
    key = secrets.token_hex(32)
    marker = tmp_path / "pwned"
    evil = _evil_pickle(marker)
    caplog.set_level(logging.DEBUG, logger="cachewise")
    with Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key) as cache:

        def forge(entry: str) -> Callable[[bytes], bytes]:
            return lambda signed: _FORGERIES[forgery](evil, signed, entry, key)

        plain, tagged = cache.keyspace.entry("obj:1"), cache.keyspace.entry("obj:2")
        cache.set("obj:1", {"when": datetime(2024, 1, 2, tzinfo=timezone.utc), "n": Decimal("1.5")}, ttl=60)
        cache.set("obj:2", ("a", "tuple"), ttl=60, tags=["t"])
        assert cache.get("obj:1") == {"when": datetime(2024, 1, 2, tzinfo=timezone.utc), "n": Decimal("1.5")}
        assert cache.get("obj:2") == ("a", "tuple")
        tampered_reads = 0

        # A plain read (the MGET path).
        _replace_payload(raw, plain, forge(plain))
        assert cache.get("obj:1", MISSING) is MISSING
        assert cache.get("obj:1", default="d") == "d"
        tampered_reads += 2
        # An entry with tags read without naming them (the Lua read), then naming them (the MGET path).
        _replace_payload(raw, tagged, forge(tagged))
        assert cache.get("obj:2", MISSING) is MISSING
        assert cache.get("obj:2", MISSING, tags=["t"]) is MISSING
        tampered_reads += 2
        assert cache.stats().total.tampered == tampered_reads
        assert cache.stats().total.hits == 2
        # Cache-aside: the loader's value, stored in place of the forgery (signed, so it reads back).
        assert cache.get_or_set("obj:1", lambda: "reloaded", ttl=60) == "reloaded"
        assert cache.get("obj:1") == "reloaded"
        _replace_payload(raw, tagged, forge(tagged))

        @cache.cached(ttl=60, key="obj:2", tags=["t"])
        def load() -> str:
            return "from the decorator"

        assert load() == "from the decorator"
        assert cache.get("obj:2") == "from the decorator"
        assert cache.stats().total.tampered >= tampered_reads + 2

    assert not marker.exists(), "a forged pickle was unpickled"
    assert all(evil not in data for data in loads_calls), "pickle.loads was called on a forged payload"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "signature" in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert unique_namespace in warnings[0].getMessage()  # names the entry
    assert key not in "\n".join(_log_texts(caplog))


async def test_a_tampered_pickle_is_a_miss_on_the_async_path(
    server_url: str, unique_namespace: str, raw: redis.Redis, tmp_path: Path, loads_calls: list[bytes]
) -> None:
    key = secrets.token_hex(32)
    marker = tmp_path / "pwned-async"
    evil = _evil_pickle(marker)
    cache = Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key)
    try:
        entry = cache.keyspace.entry("obj:1")
        assert await cache.aset("obj:1", {1, 2, 3}, ttl=60)
        assert await cache.aget("obj:1") == {1, 2, 3}
        _replace_payload(raw, entry, lambda signed: signed[:MAC_BYTES] + evil)
        assert await cache.aget("obj:1", MISSING) is MISSING

        async def loader() -> str:
            return "async reload"

        _replace_payload(raw, entry, lambda signed: Signer(secrets.token_hex(32)).sign(entry, b"p", evil))
        assert await cache.aget_or_set("obj:1", loader, ttl=60) == "async reload"
        assert await cache.aget("obj:1") == "async reload"
        assert cache.stats().total.tampered >= 2
    finally:
        await cache.aclose()
    assert not marker.exists()
    assert all(evil not in data for data in loads_calls)


# == 3. signatures bind the value to its key and to the secret ======================================================
def _graft(raw: redis.Redis, source: str, target: str) -> None:
    """Put ``source``'s signed payload under ``target``, keeping ``target``'s own (valid) header, so that only the
    signature can tell the value does not belong there."""
    source_stored, target_stored = raw.get(source), raw.get(target)
    assert isinstance(source_stored, bytes) and isinstance(target_stored, bytes)
    target_head, _ = _head_and_signed(target_stored)
    _, source_signed = _head_and_signed(source_stored)
    raw.set(target, target_head + source_signed, keepttl=True)


def test_a_signed_value_moved_to_another_key_does_not_verify(
    server_url: str, unique_namespace: str, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = secrets.token_hex(32)
    caplog.set_level(logging.WARNING, logger="cachewise")
    with Cache(server_url, namespace=unique_namespace, signing_key=key) as cache:
        cache.set("user:1", {"role": "admin"}, ttl=60)
        cache.set("user:2", {"role": "guest"}, ttl=60)
        _graft(raw, cache.keyspace.entry("user:1"), cache.keyspace.entry("user:2"))
        assert cache.get("user:2", MISSING) is MISSING
        assert cache.get("user:1") == {"role": "admin"}
        total = cache.stats().total
        assert (total.tampered, total.hits, total.invalid) == (1, 1, 0)
        # A verbatim copy (header included) is no better: a miss, never the other key's value.
        raw.set(cache.keyspace.entry("user:3"), raw.get(cache.keyspace.entry("user:1")), px=60_000)
        assert cache.get("user:3", MISSING) is MISSING
    assert any("signature" in r.getMessage() for r in caplog.records)


def test_a_signed_value_moved_to_another_namespace_does_not_verify(
    server_url: str, unique_namespace: str, raw: redis.Redis
) -> None:
    key, other_ns = secrets.token_hex(32), unique_namespace + "-other"
    try:
        with (
            Cache(server_url, namespace=unique_namespace, signing_key=key) as a,
            Cache(server_url, namespace=other_ns, signing_key=key) as b,
        ):
            a.set("user:1", "admin of a", ttl=60)
            b.set("user:1", "guest of b", ttl=60)
            _graft(raw, a.keyspace.entry("user:1"), b.keyspace.entry("user:1"))
            assert b.get("user:1", MISSING) is MISSING
            assert b.stats().total.tampered == 1
            assert a.get("user:1") == "admin of a"
    finally:
        drop_namespace(server_url, other_ns)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_a_value_signed_with_another_key_is_tampered(
    server_url: str, unique_namespace: str, loads_calls: list[bytes], serializer: str
) -> None:
    k1, k2 = secrets.token_hex(32), secrets.token_hex(32)
    with (
        Cache(server_url, namespace=unique_namespace, serializer=serializer, signing_key=k1) as writer,
        Cache(server_url, namespace=unique_namespace, serializer=serializer, signing_key=k2) as reader,
    ):
        assert writer.set("k", ["payload"], ttl=60)
        loads_calls.clear()
        assert reader.get("k", MISSING) is MISSING
        assert reader.get_or_set("k", lambda: "mine", ttl=60) == "mine"
        assert reader.stats().total.tampered >= 1
        assert loads_calls == []  # nothing was unpickled for the reader with the wrong key
        assert writer.get("k", MISSING) is MISSING  # the reader's value (signed with K2) is tampered for the writer
        assert writer.stats().total.tampered == 1


def test_signed_json_round_trips_and_is_hmac_sha256_of_entry_code_and_payload(
    server_url: str, unique_namespace: str, raw: redis.Redis
) -> None:
    key = secrets.token_hex(32)
    value = {
        "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        "price": Decimal("9.99"),
        "blob": b"\x00\xff",
        "ids": {1, 2},
        "nested": [{"a": None}, "ü"],
    }
    with Cache(server_url, namespace=unique_namespace, signing_key=key) as cache:
        assert cache.serializer.name == "json"
        assert cache.set("doc:1", value, ttl=60)
        assert cache.get("doc:1") == value
        assert cache.get_or_set("doc:1", lambda: "not called", ttl=60) == value
        entry = cache.keyspace.entry("doc:1")
        stored = raw.get(entry)
        assert isinstance(stored, bytes)
        code, signed = payload_of(stored)
        assert code == b"j"
        mac, payload = signed[:MAC_BYTES], signed[MAC_BYTES:]
        message = entry.encode() + b"\x00" + b"j" + b"\x00" + payload
        assert mac == hmac.new(key.encode(), message, hashlib.sha256).digest()
        assert cache.serializer.loads(payload) == value
        assert cache.stats().total.tampered == 0


def test_unsigned_and_signed_caches_do_not_read_each_other(
    server_url: str, unique_namespace: str, loads_calls: list[bytes]
) -> None:
    key = secrets.token_hex(32)
    with (
        Cache(server_url, namespace=unique_namespace) as unsigned,
        Cache(server_url, namespace=unique_namespace, signing_key=key) as signed,
    ):
        signed.set("a", {"signed": True}, ttl=60)
        assert unsigned.get("a", MISSING) is MISSING  # MAC + JSON is no JSON: invalid, a miss, no exception
        assert unsigned.stats().total.invalid == 1
        assert unsigned.get_or_set("a", lambda: "unsigned value", ttl=60) == "unsigned value"
        # ... and a value written without the key is a forgery for the signed cache.
        assert signed.get("a", MISSING) is MISSING
        assert signed.stats().total.tampered == 1
        unsigned.set("b", "x" * 100, ttl=60)
        assert signed.get("b", MISSING) is MISSING
        assert signed.stats().total.tampered == 2
    with Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key) as pickled:
        assert pickled.get("b", MISSING) is MISSING  # a JSON entry: another serializer's, not unpickled
        assert pickled.stats().total.invalid == 1
    assert loads_calls == []


class _RawBytes:
    """A legitimate custom serializer: bytes stored as they are (e.g. uploaded files)."""

    name = "raw"
    code = b"r"

    def dumps(self, value: Any) -> bytes:
        return bytes(value)

    def loads(self, data: bytes) -> Any:
        return data


def test_relabelling_the_serializer_code_is_tampering(
    server_url: str, unique_namespace: str, raw: redis.Redis, tmp_path: Path
) -> None:
    key = secrets.token_hex(32)
    marker = tmp_path / "pwned-relabel"
    with (
        Cache(server_url, namespace=unique_namespace, serializer=_RawBytes(), signing_key=key) as blobs,
        Cache(server_url, namespace=unique_namespace, serializer="pickle", signing_key=key) as objects,
    ):
        blobs.set("item:1", _evil_pickle(marker), ttl=60)  # user-supplied bytes, legitimately signed
        entry = blobs.keyspace.entry("item:1")
        stored = raw.get(entry)
        assert isinstance(stored, bytes)
        raw.set(entry, stored[:3] + b"p" + stored[4:], keepttl=True)  # an attacker flips the code byte only
        assert objects.get("item:1", MISSING) is MISSING
        assert objects.stats().total.tampered == 1
    assert not marker.exists()


# == 4. namespaces are isolated ======================================================================================
def _snapshot(raw: redis.Redis, namespace: str) -> dict[bytes, bytes | None]:
    """Every key of ``namespace`` with its serialized value (DUMP), to compare before and after."""
    return {k: raw.dump(k) for k in sorted(raw.scan_iter(match=f"{namespace}:*", count=1000))}


@pytest.fixture
def neighbour_namespaces(server_url: str, unique_namespace: str) -> Iterator[list[str]]:
    """``X``, ``X-b`` and ``Xb``: namespaces that are prefixes of each other as plain strings."""
    names = [unique_namespace, unique_namespace + "-b", unique_namespace + "b"]
    yield names
    for name in names[1:]:
        try:
            offenders = keys_without_ttl(server_url, name)
        finally:
            drop_namespace(server_url, name)
        assert not offenders, f"keys written without a TTL: {offenders}"


def test_operations_never_touch_another_namespace(
    server_url: str, raw: redis.Redis, neighbour_namespaces: list[str]
) -> None:
    caches = [Cache(server_url, namespace=ns, default_ttl=120) for ns in neighbour_namespaces]
    main, others = caches[0], caches[1:]
    try:
        for cache in caches:
            cache.set("product:1", {"ns": cache.namespace}, tags=["t"])
            cache.set("plain", cache.namespace)
            assert cache.get_or_set("loaded:1", lambda ns=cache.namespace: f"loaded in {ns}") == (
                f"loaded in {cache.namespace}"
            )
        before = {cache.namespace: _snapshot(raw, cache.namespace) for cache in others}
        assert all(before.values()), before
        stats_before = [c.stats().total for c in others]

        def unchanged(step: str) -> None:
            for cache in others:
                assert _snapshot(raw, cache.namespace) == before[cache.namespace], f"{step} touched {cache.namespace}"

        main.invalidate_tags("t")
        assert main.get("product:1", MISSING) is MISSING
        unchanged("invalidate_tags")
        main.set("product:1", "again", tags=["t"])
        main.bump_version("product")
        assert main.get("product:1", MISSING) is MISSING
        unchanged("bump_version(group)")
        assert main.get("plain") == main.namespace
        main.bump_version()
        assert main.get("plain", MISSING) is MISSING
        unchanged("bump_version()")
        main.set("plain", "again")
        assert main.delete("plain") is True
        unchanged("delete")
        main.stats()
        main.reset_stats()
        unchanged("stats")
        audit = audit_ttls(main)  # the TTL audit (cachewise demo) scans the namespace, not its neighbours
        assert audit.keys == len(_snapshot(raw, main.namespace)) and not audit.without_ttl
        unchanged("audit_ttls")
        main.set("plain", "again")
        assert main.clear() >= 1
        assert _snapshot(raw, main.namespace) == {}
        unchanged("clear")

        # The neighbours still hit, on both read paths, and their counters did not move.
        assert [c.stats().total for c in others] == stats_before
        for cache in others:
            assert cache.get("product:1", tags=["t"]) == {"ns": cache.namespace}
            assert cache.get("product:1") == {"ns": cache.namespace}
            assert cache.get("plain") == cache.namespace
            assert cache.get("loaded:1") == f"loaded in {cache.namespace}"
            assert cache.stats().total.hits == 4
            assert cache.stats().namespace == cache.namespace
    finally:
        for cache in caches:
            cache.close()


# == servers of our own: Debian's redis-server on a free port ========================================================
@dataclass
class RedisProcess:
    """A redis-server started by a test; :meth:`stop` kills it and waits for it."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    def output(self) -> str:
        logs = (self.directory / "stdout.log", self.directory / "redis.log")
        return "".join(p.read_text(errors="replace") for p in logs if p.exists())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class NoTlsSupport(RuntimeError):
    """This redis-server was built without TLS."""


#: What a redis-server built without TLS says when given ``--tls-port`` (a certificate problem says otherwise).
_NO_TLS_HINTS = ("bad directive", "not supported", "not enabled", "not available", "(tls), aborting", "connection type")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_redis(directory: Path, options: list[str], *, tls: bool = False) -> RedisProcess:
    """Start redis-server on a free port of 127.0.0.1 (its TLS port when ``tls``) and wait until it is ready."""
    binary = _need("redis-server")
    last = ""
    for _ in range(5):  # another process may take the free port before the server binds it
        port = _free_port()
        run_dir = directory / f"redis-{port}"
        run_dir.mkdir(parents=True)
        ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        command = [
            binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(run_dir), "--logfile", str(run_dir / "redis.log"), *options,
        ]  # fmt: skip
        with open(run_dir / "stdout.log", "wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir)
        server = RedisProcess(process, port, run_dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            log = run_dir / "redis.log"
            if process.poll() is not None:
                break
            if log.exists() and "Ready to accept connections" in log.read_text(errors="replace"):
                return server
            time.sleep(0.02)
        server.stop()
        last = server.output()
        if "Address already in use" in last:
            continue
        if tls and "tls" in last.lower() and any(hint in last.lower() for hint in _NO_TLS_HINTS):
            raise NoTlsSupport(last[-2000:])
        raise RuntimeError(f"redis-server did not start: {shlex.join(command)}\n{last[-4000:]}")
    raise RuntimeError(f"redis-server found no free port:\n{last[-2000:]}")


def _no_tls(exc: NoTlsSupport) -> None:
    message = f"this redis-server has no TLS support: {exc}"
    if IN_CI:
        pytest.fail(message + "; CI needs Debian's redis-server (built with TLS)")
    pytest.skip(message)


# == 5. password and ACL users ========================================================================================
@dataclass(frozen=True)
class AuthServer:
    port: int
    password: str  # the default user's (requirepass)
    alice_password: str  # an ACL user with every permission
    app_password: str  # an ACL user limited to the keys and channels of one namespace
    app_namespace: str

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def secrets(self) -> list[str]:
        return [self.password, self.alice_password, self.app_password]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    password, alice, app = (f"pw-{secrets.token_hex(12)}" for _ in range(3))
    namespace = f"cwacl-{uuid.uuid4().hex[:8]}"
    options = [
        "--requirepass", password,
        "--user", "alice", "on", f">{alice}", "~*", "&*", "+@all",
        "--user", "app", "on", f">{app}", f"~{namespace}:*", f"&{namespace}:*", "+@all", "-@dangerous",
    ]  # fmt: skip
    server = _start_redis(tmp_path_factory.mktemp("auth"), options)
    try:
        yield AuthServer(server.port, password, alice, app, namespace)
    finally:
        server.stop()


def _exercise(cache: Cache) -> None:
    """Every kind of call, on a server that accepts this cache: none may fail (fail-open would hide it)."""
    calls: list[int] = []
    assert cache.set("user:1", {"id": 1}, ttl=30, tags=["users"])
    assert cache.get("user:1") == {"id": 1}
    assert cache.get("user:1", tags=["users"]) == {"id": 1}
    assert cache.get_or_set("user:2", lambda: calls.append(2) or "two", ttl=30) == "two"
    assert cache.get_or_set("user:2", lambda: calls.append(2) or "two", ttl=30) == "two"
    assert calls == [2]
    assert cache.ttl("user:2") is not None
    assert cache.invalidate_tags("users") == 1
    assert cache.get("user:1", MISSING) is MISSING
    assert cache.bump_version("user") == 1
    assert cache.get("user:2", MISSING) is MISSING
    cache.set("user:3", 3, ttl=30)
    assert cache.bump_version() == 1
    cache.set("user:4", 4, ttl=30)
    assert cache.delete("user:4") is True
    cache.set("user:5", 5, ttl=30)
    assert cache.clear() >= 1
    assert cache.connection.notifier.ensure(cache.keyspace.fill_channel, timeout=5)  # pub/sub, same credentials

    async def async_calls() -> None:
        assert await cache.aset("user:6", 6, ttl=30)
        assert await cache.aget("user:6") == 6
        assert await cache.aget_or_set("user:7", lambda: 7, ttl=30) == 7
        await cache.connection.aclose_loop()

    asyncio.run(async_calls())
    total = cache.stats().total
    assert (total.errors, total.skipped, total.invalid) == (0, 0, 0), total
    cache.clear()


@pytest.mark.parametrize("user", ["default", "alice", "app"])
def test_password_and_acl_users_work(auth_server: AuthServer, caplog: pytest.LogCaptureFixture, user: str) -> None:
    caplog.set_level(logging.DEBUG)
    password = {"default": auth_server.password, "alice": auth_server.alice_password, "app": auth_server.app_password}
    url = auth_server.url("" if user == "default" else user, password[user])
    namespace = auth_server.app_namespace if user == "app" else f"cwauth-{uuid.uuid4().hex[:8]}"
    with Cache(url, namespace=namespace, timeout=2, connect_timeout=2) as cache:
        _exercise(cache)
        texts = [repr(cache), str(cache), cache.url, repr(cache.connection), repr(cache.connection.sync)]
        assert not _leaks(texts, auth_server.secrets)
        assert "***" in cache.url
    assert not _leaks(_log_texts(caplog), auth_server.secrets)


def test_an_acl_user_limited_to_its_namespace_cannot_reach_others(auth_server: AuthServer) -> None:
    """The server enforces the isolation the ``app`` user's namespace promises: another namespace is refused, and
    the cache fails open instead of raising."""
    admin = redis.Redis(host="127.0.0.1", port=auth_server.port, password=auth_server.password)
    try:
        admin.set("elsewhere:1", b"not yours", px=60_000)
        url = auth_server.url("app", auth_server.app_password)
        with Cache(url, namespace="elsewhere", timeout=2, connect_timeout=2) as intruder:
            assert intruder.get("1", default="d") == "d"
            assert intruder.get_or_set("1", lambda: "loader", ttl=30) == "loader"
            assert intruder.stats().total.errors >= 1
            with pytest.raises(InvalidationError):
                intruder.delete("1")
        assert admin.get("elsewhere:1") == b"not yours"
    finally:
        admin.delete("elsewhere:1")
        admin.close()


@pytest.mark.parametrize("who", ["wrong-password", "wrong-acl-password", "unknown-user", "no-password"])
def test_wrong_credentials_fail_open_and_are_never_logged(
    auth_server: AuthServer, caplog: pytest.LogCaptureFixture, who: str
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{secrets.token_hex(12)}"
    url = {
        "wrong-password": auth_server.url("", wrong),
        "wrong-acl-password": auth_server.url("alice", wrong),
        "unknown-user": auth_server.url("mallory", wrong),
        "no-password": f"redis://127.0.0.1:{auth_server.port}/0",
    }[who]
    every_secret = [wrong, *auth_server.secrets]
    cache = Cache(url, namespace=f"cwauth-{uuid.uuid4().hex[:8]}", timeout=1, connect_timeout=1, breaker_reset=0.05)
    try:
        assert cache.get("k", default="default") == "default"
        assert cache.get_or_set("k", lambda: "loader", ttl=30) == "loader"
        assert cache.set("k", 1, ttl=30) is False
        assert cache.ttl("k") is None
        raised: list[BaseException] = []
        for invalidate in (lambda: cache.delete("k"), cache.bump_version, lambda: cache.invalidate_tags("t")):
            time.sleep(0.06)  # past the breaker's reset: the call reaches the server
            with pytest.raises(InvalidationError) as info:
                invalidate()
            raised.append(info.value)

        async def async_calls() -> None:
            assert await cache.aget("k", default="d") == "d"
            assert await cache.aget_or_set("k", lambda: "async loader", ttl=30) == "async loader"
            await cache.connection.aclose_loop()

        asyncio.run(async_calls())
        assert cache.stats().total.errors >= 1
        texts = [repr(cache), str(cache), cache.url, repr(cache.connection), repr(cache.stats())]
        for exc in raised:
            texts += _exception_texts(exc)
        assert not _leaks(texts, every_secret)
    finally:
        cache.close()
    logged = _log_texts(caplog)
    assert any("carrying on" in t for t in logged), logged  # the failure was logged...
    assert not _leaks(logged, every_secret)  # ...without the password


# == 6. TLS ===========================================================================================================
@dataclass(frozen=True)
class Certs:
    directory: Path

    def __getitem__(self, name: str) -> str:
        return str(self.directory / name)


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        [_need("openssl"), *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {shlex.join(args)} failed:\n{result.stderr}"


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=cachewise test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_leaf(directory: Path, name: str, ca: str, usage: str, san: str | None) -> None:
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if san:
        extensions.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl(
        directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(secrets.randbits(63)), "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("tls")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")  # trusted by nobody
    _make_leaf(directory, "server", "ca", "serverAuth", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(directory, "localhost-only", "ca", "serverAuth", "DNS:localhost")  # for the hostname check
    _make_leaf(directory, "client", "ca", "clientAuth", None)
    _make_leaf(directory, "rogue-client", "other-ca", "clientAuth", None)
    return Certs(directory)


@dataclass(frozen=True)
class TlsServer:
    port: int
    password: str | None


def _tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs, cert: str, auth_clients: str, password: str | None
) -> Iterator[TlsServer]:
    options = [
        "--tls-cert-file", certs[f"{cert}.crt"], "--tls-key-file", certs[f"{cert}.key"],
        "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", auth_clients,
    ]  # fmt: skip
    if password:
        options += ["--requirepass", password]
    try:
        server = _start_redis(tmp_path_factory.mktemp("tls-server"), options, tls=True)
    except NoTlsSupport as exc:
        _no_tls(exc)
        raise
    try:
        yield TlsServer(server.port, password)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsServer]:
    """Client certificates required, and a password."""
    yield from _tls_server(tmp_path_factory, certs, "server", "yes", f"tlspw-{secrets.token_hex(12)}")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsServer]:
    """No client certificates; its certificate names only ``localhost``."""
    yield from _tls_server(tmp_path_factory, certs, "localhost-only", "no", None)


def _tls_options(certs: Certs, *, client: str | None = "client", ca: str | None = "ca") -> dict[str, Any]:
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca:
        options["ssl_ca_certs"] = certs[f"{ca}.crt"]
    if client:
        options["ssl_certfile"], options["ssl_keyfile"] = certs[f"{client}.crt"], certs[f"{client}.key"]
    return options


def test_tls_with_a_client_certificate_and_a_password(
    mutual_tls_server: TlsServer, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = mutual_tls_server.password
    assert password
    url = f"rediss://:{password}@127.0.0.1:{mutual_tls_server.port}/0"
    namespace = f"cwtls-{uuid.uuid4().hex[:8]}"
    with Cache(url, namespace=namespace, timeout=2, connect_timeout=2, client_options=_tls_options(certs)) as cache:
        _exercise(cache)
        assert cache.url == f"rediss://:***@127.0.0.1:{mutual_tls_server.port}/0"
        assert not _leaks([repr(cache), repr(cache.connection), repr(cache.connection.sync)], [password])
    assert not _leaks(_log_texts(caplog), [password])


def test_tls_with_the_ca_only_and_hostname_verification(tls_server: TlsServer, certs: Certs) -> None:
    options = _tls_options(certs, client=None)
    url, namespace = f"rediss://localhost:{tls_server.port}/0", f"cwtls-{uuid.uuid4().hex[:8]}"
    with Cache(url, namespace=namespace, timeout=2, connect_timeout=2, client_options=options) as cache:
        assert cache.set("k", {"over": "tls"}, ttl=30)
        assert cache.get("k") == {"over": "tls"}
        assert cache.stats().total.errors == 0
        cache.clear()
    # Its certificate names localhost, not 127.0.0.1: refused (a miss), not an exception.
    with Cache(f"rediss://127.0.0.1:{tls_server.port}/0", timeout=1, connect_timeout=1, client_options=options) as c:
        assert c.get("k", default="d") == "d"
        assert c.set("k", 1, ttl=30) is False
        assert c.stats().total.errors >= 1


@pytest.mark.parametrize(
    "case",
    ["no-client-certificate", "client-certificate-of-another-ca", "unknown-server-ca", "system-cas-only", "plain-tcp"],
)
def test_tls_failures_fail_open_without_leaking_the_password(
    mutual_tls_server: TlsServer, certs: Certs, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    password = mutual_tls_server.password
    assert password
    options = {
        "no-client-certificate": _tls_options(certs, client=None),
        "client-certificate-of-another-ca": _tls_options(certs, client="rogue-client"),
        "unknown-server-ca": _tls_options(certs, ca="other-ca"),
        "system-cas-only": _tls_options(certs, ca=None),
        "plain-tcp": {},  # redis:// to the TLS port
    }[case]
    scheme = "redis" if case == "plain-tcp" else "rediss"
    url = f"{scheme}://:{password}@127.0.0.1:{mutual_tls_server.port}/0"
    namespace = f"cwtls-{uuid.uuid4().hex[:8]}"
    cache = Cache(url, namespace=namespace, timeout=1, connect_timeout=1, breaker_reset=0.05, client_options=options)
    try:
        assert cache.get("k", default="default") == "default"
        assert cache.get_or_set("k", lambda: "loader", ttl=30) == "loader"
        assert cache.set("k", 1, ttl=30) is False
        assert cache.stats().total.errors >= 1
        time.sleep(0.06)  # past the breaker's reset: the delete reaches the server
        with pytest.raises(InvalidationError) as info:
            cache.delete("k")
        texts = [repr(cache), cache.url, *_exception_texts(info.value)]
        assert not _leaks(texts, [password])
    finally:
        cache.close()
    logged = _log_texts(caplog)
    assert any("carrying on" in t for t in logged), logged
    assert not _leaks(logged, [password])


# == 7. redaction ====================================================================================================
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://user:pw-secret@host:1/0", "rediss://user:***@host:1/0"),
        ("redis://:pw-secret@host/0", "redis://:***@host/0"),
        ("redis://user:p%40w-secret@host:6380/2", "redis://user:***@host:6380/2"),
        ("redis://us:er:pw-secret@host:1/0", None),
        ("redis://user@host:1/0", "redis://user@host:1/0"),
        ("redis://host:1/0", "redis://host:1/0"),
    ],
)
def test_redact(url: str, expected: str | None) -> None:
    out = redact(url)
    assert "pw-secret" not in out and "p%40w" not in out
    if expected is not None:
        assert out == expected


def test_cache_repr_and_url_hide_the_password() -> None:
    port = _free_port()  # nothing listens there: every call fails open
    url = f"rediss://user:pw-{secrets.token_hex(8)}@127.0.0.1:{port}/0"
    password = url.split(":")[2].split("@")[0]
    with Cache(url, namespace="cwrepr", timeout=0.2, connect_timeout=0.2) as cache:
        assert repr(cache) == f"Cache('rediss://user:***@127.0.0.1:{port}/0', namespace='cwrepr')"
        assert cache.url == f"rediss://user:***@127.0.0.1:{port}/0"
        assert password not in repr(cache.connection) + repr(cache.connection.address) + repr(cache.connection.sync)


@pytest.mark.parametrize("scheme", ["redis", "unix"])
def test_a_password_in_the_query_string_is_hidden(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"pw-{secrets.token_hex(8)}"
    where = f"127.0.0.1:{_free_port()}/0" if scheme == "redis" else "/nonexistent/redis.sock"
    url = f"{scheme}://{where}?password={password}"
    with Cache(url, namespace="cwrepr", timeout=0.2, connect_timeout=0.2) as cache:
        assert cache.get("k", default="d") == "d"
        assert not _leaks([repr(cache), cache.url, redact(url), *_log_texts(caplog)], [password])


@pytest.mark.parametrize("user", ["", "user"], ids=["no-user", "user"])
@pytest.mark.parametrize("separator", ["/", "#", "?"])
def test_a_malformed_url_error_does_not_quote_the_password(user: str, separator: str) -> None:
    halves = [f"first-{secrets.token_hex(4)}", f"second-{secrets.token_hex(4)}"]
    with pytest.raises(Exception) as info:  # which one is checked below
        Cache(f"redis://{user}:{separator.join(halves)}@host:6379/0")
    assert not _leaks(_exception_texts(info.value), halves)
    assert isinstance(info.value, ConfigurationError)
