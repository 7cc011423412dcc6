"""Server-side sessions: unguessable ids, sliding *and* absolute expiry, rotation at login, logout everywhere.

>>> store = SessionStore(cache, ttl=1800, sliding=True, absolute_ttl=12 * 3600)
>>> sid = store.create({"user_id": 7})          # the cookie value
>>> store.get(sid)                              # {"user_id": 7}, and the idle TTL starts again
>>> store.update(sid, {"cart": [1, 2]})         # merge: other keys are left as they are
>>> sid = store.rotate(sid)                     # at login: new id, same data, the old id is dead
>>> store.destroy_user(7)                       # log user 7 out everywhere

**Ids.**  32 bytes from :mod:`secrets` (256 bits), URL-safe base64 without padding: 43 characters of
``[A-Za-z0-9_-]``, safe in a cookie and a URL.  They are never derived from user data.  :meth:`SessionStore.is_valid_id`
checks the exact form (including the last character, which only carries 4 bits), so a forged or malformed id (an
attacker's chosen value, ``../x``, non-ASCII, megabytes) is rejected before any server call.  A session is only ever
stored under an id this module generated: :meth:`~SessionStore.update` and :meth:`~SessionStore.replace` of an
unknown id return False instead of creating it (session fixation: an attacker-chosen cookie value is never
persisted).

**Expiry.**  ``ttl`` is the idle timeout; ``absolute_ttl`` (default 12 h, None for no cap) bounds the whole life of
a session, counted from its creation.  Every write (create, update, replace, rotate) renews the idle TTL; with
``sliding=True`` every read does too.  The renewed TTL is ``min(ttl, created + absolute_ttl - now)``, computed inside
the server's Lua script from the server's clock (``TIME``), so the clients' clocks never matter; a session therefore
dies at its absolute cap however often it is used, and :meth:`~SessionStore.rotate` keeps the creation time (a
rotation does not extend the cap).

**Storage.**  One hash per session at ``<namespace>:_cw:s:<prefix>:<id>``: a field ``d:<key>`` per data key, each
value serialized on its own by the cache's serializer (and HMAC-signed when the cache has a ``signing_key``, bound to
the session's lineage and the field, so that a value cannot be moved to another session), plus hidden metadata
(``m:c`` created at, ``m:l`` lineage, ``m:u`` owner).  Sessions of a user are listed in a set at
``<namespace>:_cw:u:<prefix>:<user>``, which lives at least as long as any session it lists; it may list sessions that
have expired since (harmless: :meth:`~SessionStore.destroy_user` skips them, and adding a session drops them).  Every
key is written with its TTL in the same atomic step.  Redis Cluster is not supported yet: the scripts reach the
owner's index and the sessions it lists by name.

**Merge rule (concurrent requests).**  :meth:`~SessionStore.update` writes only the keys it is given (and deletes the
``remove`` keys), field by field, in one atomic script.  Concurrent updates of *different* keys never lose each other
(Flask-Session's lost updates, #71/#149, came from writing the whole session back).  Concurrent updates of the
*same* key: the last write to reach the server wins.  :meth:`~SessionStore.replace` is a whole-session write: it
drops every key it is not given, including keys another request just wrote, so prefer ``update``.  A write never
resurrects a session that was destroyed, rotated away or expired meanwhile: it returns False.

**Empty sessions are not stored.**  ``create({})`` returns a fresh id and writes nothing (millions of empty
sessions, Flask-Session #181); :meth:`~SessionStore.get` of that id is None, and ``update`` of it False.  Create the
session when there is data to keep.  (A session emptied later by ``update``/``replace`` stays until it expires.)

**Owners.**  A session belongs to the user given as ``create(..., user_id=)``, or else to ``data["user_id"]`` (the key
is ``user_key=``); a later write that sets ``user_key`` to another user moves it to that user.  Setting it to None
or removing it does not disown the session: to log out, :meth:`~SessionStore.destroy` it (or rotate it).

**When the server fails** (down, timing out, circuit breaker open), the store fails open and counts and logs the error
(rate-limited, never with a session id: logs show at most a short hash of one): :meth:`~SessionStore.get` is None (the
request goes on as one without a session), ``exists`` False, ``update``/``replace`` False, ``rotate`` None, and
``create`` still returns a fresh id, which was not stored (the next request finds no session).  Destroying is an
invalidation, and a logout that did not happen must not pass silently: :meth:`~SessionStore.destroy` and
:meth:`~SessionStore.destroy_user` raise :class:`~cachewise.errors.InvalidationError` (retry, or tell the user).
Only misuse raises otherwise: data keys that are not strings, values the serializer cannot encode, a value larger
than the cache's ``max_value_bytes``, a user id that is not a str, an int or a UUID.

Counts are kept under ``cache.stats().functions["sessions:<prefix>"]``: ``hits``/``misses`` of reads, ``sets``,
``deletes``, ``invalid`` and ``tampered`` sessions (ignored, never decoded), ``errors`` and ``skipped`` calls,
``roundtrips`` and their time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import CachewiseError, ConfigurationError, InvalidationError, InvalidKeyError, SerializationError
from ..failures import SERVER_ERRORS, CircuitOpen
from ..server import resp
from ..server.scripts import Script
from ..signing import TamperedValue
from ..ttl import to_seconds

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = [
    "SESSION_ID_BYTES",
    "Session",
    "SessionDataError",
    "SessionStore",
    "is_session_id",
    "new_session_id",
]

#: Random bytes in a session id (256 bits; at least 128 are needed).
SESSION_ID_BYTES = 32
#: Characters in a session id: ``SESSION_ID_BYTES`` in unpadded URL-safe base64.
SESSION_ID_LENGTH = 43
# The last of 43 characters carries 4 bits (and 2 zero bits): only these 16 characters can end a real id.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_MAX_USER_CHARS = 256
_DATA = "d:"
_LINEAGE_MEMO = 4096
_ATTEMPTS = 3  # fresh ids tried when one is taken (with 256 random bits, never more than one in practice)

_COMMON = "common.lua"
_GET = Script.beside(__package__ or "cachewise.sessions", "get.lua", prelude=_COMMON)
_WRITE = Script.beside(__package__ or "cachewise.sessions", "write.lua", prelude=_COMMON)
_ROTATE = Script.beside(__package__ or "cachewise.sessions", "rotate.lua", prelude=_COMMON)
_DESTROY = Script.beside(__package__ or "cachewise.sessions", "destroy.lua")
_DESTROY_USER = Script.beside(__package__ or "cachewise.sessions", "destroy_user.lua")

#: A session's data as :meth:`SessionStore.get` returns it (the request-facing, change-tracking session of the ASGI
#: middleware is :class:`cachewise.asgi.sessions.Session`).
Session = dict[str, Any]


class SessionDataError(CachewiseError, ValueError):
    """Session data the store cannot keep: a key that is not a string, a key both set and removed, or a value larger
    than the cache's ``max_value_bytes``."""


# -- pure policy -------------------------------------------------------------------------------------------------
def new_session_id() -> str:
    """A fresh session id: 256 bits from :mod:`secrets`, 43 URL- and cookie-safe characters."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_session_id(text: object) -> bool:
    """Whether ``text`` has the exact form of an id from :func:`new_session_id` (no server call)."""
    return type(text) is str and len(text) == SESSION_ID_LENGTH and _ID_RE.fullmatch(text) is not None


def fingerprint(sid: str) -> str:
    """A short hash of a session id, for logs (an id is a credential: never log it)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:10]


def owner_token(user_id: object) -> str:
    """How a user id appears in key names and in the ``m:u`` field: its text, percent-encoded."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int, uuid.UUID)):
        raise InvalidKeyError(
            f"a session's user id must be a str, an int or a UUID, got {type(user_id).__name__}: pass user_id= "
            "explicitly, or store a plain id under the store's user_key"
        )
    text = str(user_id)
    if not text or len(text) > _MAX_USER_CHARS:
        raise InvalidKeyError(f"a session's user id must be 1-{_MAX_USER_CHARS} characters, got {len(text)}")
    return quote(text, safe="")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _data_key(key: object) -> str:
    if type(key) is not str:
        raise SessionDataError(f"session data keys must be str, got {type(key).__name__}: {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class _Call:
    """One server call: a script, or (``script`` None) the plain command ``args``."""

    script: Script | None
    keys: list[str]
    args: list[Any]


class _Failed:
    """The reply of a call that failed open."""


_FAILED = _Failed()


class SessionStore:
    """Server-side sessions in one :class:`~cachewise.Cache` (see the module documentation for every rule).

    ``ttl``: idle timeout; ``absolute_ttl``: longest life from creation, None for none (both seconds or timedelta).
    ``sliding``: reads renew the idle TTL too (writes always do).  ``prefix`` separates stores sharing a cache.
    ``user_key``: the data key naming a session's owner when ``create`` is given no ``user_id`` (None: only
    ``user_id=`` does).
    """

    def __init__(
        self,
        cache: Cache,
        ttl: float | timedelta = 1800,
        *,
        sliding: bool = True,
        absolute_ttl: float | timedelta | None = 12 * 3600,
        prefix: str = "session",
        user_key: str | None = "user_id",
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ConfigurationError(
                f"session prefix {prefix!r} is not usable: use 1-32 characters among letters, digits, '_', '.', '-'"
            )
        self.cache = cache
        self.ttl = to_seconds(ttl)
        self.absolute_ttl = None if absolute_ttl is None else to_seconds(absolute_ttl)
        self.sliding = bool(sliding)
        self.prefix = prefix
        self.user_key = user_key
        self._idle_ms = _ms(self.ttl)
        self._absolute_ms = 0 if self.absolute_ttl is None else _ms(self.absolute_ttl)
        internal = cache.keyspace.internal
        self._session_base = f"{internal}s:{prefix}:"
        self._index_base = f"{internal}u:{prefix}:"
        self._signer = cache.signer
        self._code = cache.serializer.code
        self._scope = cache.report.scope(f"sessions:{prefix}")
        self._lineages: dict[str, str] = {}  # sid -> lineage (never changes for an id): spares a read when signing

    # -- pure steps --------------------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """A fresh session id (see :func:`new_session_id`)."""
        return new_session_id()

    @staticmethod
    def is_valid_id(text: object) -> bool:
        """Whether ``text`` has the form of a session id; anything else never reaches the server."""
        return is_session_id(text)

    def key(self, sid: str) -> str:
        """The server key of a session."""
        return self._session_base + sid

    def index_key(self, user_id: str | int | uuid.UUID) -> str:
        """The server key of a user's set of session ids."""
        return self._index_base + owner_token(user_id)

    def _owner_of(self, data: Mapping[str, Any]) -> str:
        """The owner token that a write of ``data`` sets ('' when it sets none)."""
        if self.user_key is None:
            return ""
        user = data.get(self.user_key)
        return "" if user is None else owner_token(user)

    def _binding(self, lineage: str, field: str) -> str:
        return f"{self._session_base}{lineage}\x00{field}"

    def _encode(self, data: Mapping[str, Any], lineage: str, where: str) -> list[Any]:
        """Field, value pairs for ``data``: each value serialized (and signed) on its own."""
        if not isinstance(data, Mapping):
            raise SessionDataError(f"{where}: session data must be a dict, got {type(data).__name__}")
        serializer, limit = self.cache.serializer, self.cache.max_value_bytes
        out: list[Any] = []
        for key, value in data.items():
            field = _DATA + _data_key(key)
            try:
                payload = serializer.dumps(value)
            except SerializationError as exc:
                raise SerializationError(f"{where}: session key {key!r}: {exc}") from None
            if limit is not None and len(payload) > limit:
                raise SessionDataError(
                    f"{where}: session key {key!r} holds {len(payload):,} bytes, over the cache's max_value_bytes="
                    f"{limit:,}: keep sessions small (store an id, load the rest from the database)"
                )
            if self._signer is not None:
                payload = self._signer.sign(self._binding(lineage, field), self._code, payload)
            out += (field, self._code + payload)
        return out

    def _decode(self, sid: str, reply: Any) -> Session | None:
        """The data of a session from its hash's fields (None when it is not a session this store can read)."""
        if not reply:
            self.cache.report.count("misses", self._scope)
            return None
        fields = dict(zip(reply[::2], reply[1::2]))
        lineage = fields.get(b"m:l", b"").decode(errors="replace")
        data: Session = {}
        try:
            for name, raw in fields.items():
                if not name.startswith(b"d:"):
                    continue
                field = name.decode()
                if raw[:1] != self._code:
                    raise ValueError("written by another serializer")
                payload = raw[1:]
                if self._signer is not None:
                    payload = self._signer.verify(self._binding(lineage, field), self._code, payload)
                data[field[len(_DATA) :]] = self.cache.serializer.loads(payload)
        except TamperedValue:
            self._ignored(sid, "tampered", "a value's signature does not verify (tampered with, or moved)")
            return None
        except Exception as exc:  # any decoder's error: the bytes are not a value we wrote
            self._ignored(sid, "invalid", f"it cannot be decoded ({type(exc).__name__})")
            return None
        self._remember(sid, lineage)
        self.cache.report.count("hits", self._scope)
        return data

    def _ignored(self, sid: str, counter: str, why: str) -> None:
        self.cache.report.count(counter, self._scope)
        self.cache.report.warn(
            f"session:{counter}", f"session {fingerprint(sid)} ignored (treated as no session): {why}"
        )

    def _remember(self, sid: str, lineage: str) -> None:
        if self._signer is None or not lineage:
            return
        if len(self._lineages) >= _LINEAGE_MEMO:
            self._lineages.clear()
        self._lineages[sid] = lineage

    def _plan_create(self, data: Mapping[str, Any], user_id: object) -> tuple[str, list[Any]] | None:
        """The lineage and ``write.lua`` arguments (after the id) of a create; None when there is nothing
        to store."""
        lineage = secrets.token_hex(8)
        fields = self._encode(data, lineage, "SessionStore.create")
        owner = owner_token(user_id) if user_id is not None else self._owner_of(data)
        if not fields and not owner:
            return None
        return lineage, [lineage, owner, len(fields) // 2, *fields]

    def _create_call(self, sid: str, rest: list[Any]) -> _Call:
        return _Call(_WRITE, [self.key(sid)], self._head("create", sid) + rest)

    def _head(self, mode: str, sid: str) -> list[Any]:
        return [mode, self._idle_ms, self._absolute_ms, self._session_base, self._index_base, sid]

    @staticmethod
    def _removed(data: Mapping[str, Any], remove: Iterable[str], where: str) -> list[str]:
        """Validate a write (misuse raises) and return the fields it deletes."""
        if not isinstance(data, Mapping):
            raise SessionDataError(f"{where}: session data must be a dict, got {type(data).__name__}")
        if isinstance(remove, (str, bytes)):
            raise SessionDataError(f"{where}: remove= takes a collection of keys, e.g. remove=[{remove!r}]")
        removed = [_data_key(k) for k in remove]
        both = {_data_key(k) for k in data}.intersection(removed)
        if both:
            raise SessionDataError(f"{where}: keys both set and removed: {sorted(both)!r}; do one or the other")
        return [_DATA + k for k in removed]

    def _write_call(
        self, sid: str, mode: str, data: Mapping[str, Any], removed: list[str], lineage: str, where: str
    ) -> _Call:
        fields = self._encode(data, lineage, where)
        owner = self._owner_of(data)
        args = [*self._head(mode, sid), lineage, owner, len(fields) // 2, *fields, *removed]
        return _Call(_WRITE, [self.key(sid)], args)

    def _known_lineage(self, sid: str) -> str | None:
        """The lineage a write signs for: '' when not signing, the remembered one, or None (read it first)."""
        return "" if self._signer is None else self._lineages.get(sid)

    def _lineage_call(self, sid: str) -> _Call:
        return _Call(None, [], ["HGET", self.key(sid), "m:l"])

    def _get_call(self, sid: str) -> _Call:
        args = [self._idle_ms, self._absolute_ms, "1" if self.sliding else "0", self._index_base]
        return _Call(_GET, [self.key(sid)], args)

    def _rotate_call(self, sid: str, new: str) -> _Call:
        args = [self._idle_ms, self._absolute_ms, self._index_base, sid, new]
        return _Call(_ROTATE, [self.key(sid), self.key(new)], args)

    def _rotated(self, sid: str, new: str) -> None:
        lineage = self._lineages.pop(sid, None)
        if lineage is not None:
            self._lineages[new] = lineage

    def _destroy_call(self, sid: str) -> _Call:
        self._lineages.pop(sid, None)
        return _Call(_DESTROY, [self.key(sid)], [self._index_base, sid])

    def _destroy_user_call(self, user_id: str | int | uuid.UUID) -> _Call:
        token = owner_token(user_id)
        return _Call(_DESTROY_USER, [self._index_base + token], [self._session_base, token])

    def _exists_call(self, sid: str) -> _Call:
        return _Call(None, [], ["HEXISTS", self.key(sid), "m:c"])

    def _written(self, reply: Any) -> bool:
        if reply == 1:
            self.cache.report.count("sets", self._scope)
            return True
        return False

    @staticmethod
    def _not_destroyed(what: str, exc: BaseException) -> InvalidationError:
        return InvalidationError(
            f"{what} did not reach the server ({type(exc).__name__}: {exc}); the session(s) may stay valid until "
            "they expire: retry, and do not tell the user they are logged out until it succeeds"
        )

    # -- sync --------------------------------------------------------------------------------------------------
    def _run(self, call: _Call) -> Any:
        breaker = self.cache.connection.breaker
        if not breaker.allow():
            raise CircuitOpen("circuit breaker open")
        connection = self.cache.connection
        started = time.perf_counter()
        try:
            if call.script is not None:
                reply = connection.script(call.script, call.keys, call.args)
            else:
                reply = connection.execute_packed(resp.command(*call.args))
        finally:
            self.cache.report.roundtrip(time.perf_counter() - started, self._scope)
        breaker.success()
        return reply

    def _attempt(self, call: _Call, operation: str) -> Any:
        """The reply, or ``_FAILED`` after a server error (counted and logged: the caller fails open)."""
        try:
            return self._run(call)
        except SERVER_ERRORS as exc:
            self.cache.report.failure(f"session {operation}", exc, self._scope)
            return _FAILED

    def _lineage(self, sid: str) -> str | None:
        """The lineage a write must sign for ('' when not signing); None when the session is gone or unreachable."""
        known = self._known_lineage(sid)
        if known is not None:
            return known
        reply = self._attempt(self._lineage_call(sid), "update")
        if reply is _FAILED or not reply:
            return None
        self._remember(sid, reply.decode())
        return str(reply.decode())

    def create(self, data: Mapping[str, Any], user_id: str | int | uuid.UUID | None = None) -> str:
        """Store a new session and return its id.  ``user_id`` (default ``data[user_key]``) lists it for
        :meth:`destroy_user`.  Empty data with no user: the id is returned and nothing is stored."""
        plan = self._plan_create(data, user_id)
        if plan is None:
            return new_session_id()
        lineage, rest = plan
        for _ in range(_ATTEMPTS):
            sid = new_session_id()
            reply = self._attempt(self._create_call(sid, rest), "create")
            if reply is _FAILED or self._written(reply):
                self._remember(sid, lineage)
                return sid
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    def get(self, sid: str) -> Session | None:
        """The session's data, or None (unknown, expired, malformed or forged id, or the server is unreachable).
        With ``sliding=True`` the idle TTL starts again (never past the absolute lifetime)."""
        if not is_session_id(sid):
            return None
        reply = self._attempt(self._get_call(sid), "read")
        return None if reply is _FAILED else self._decode(sid, reply)

    def update(self, sid: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()) -> bool:
        """Set the keys of ``changes`` and delete the ``remove`` keys, leaving the others as they are (atomic, field
        by field: see the merge rule).  False when the session is gone (it is never created here)."""
        removed = self._removed(changes, remove, "SessionStore.update")
        if not is_session_id(sid):
            return False
        lineage = self._lineage(sid)
        if lineage is None:
            return False
        reply = self._attempt(self._write_call(sid, "merge", changes, removed, lineage, "update"), "update")
        return reply is not _FAILED and self._written(reply)

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Make ``data`` the whole session (keys not in it are deleted).  False when the session is gone."""
        self._removed(data, (), "SessionStore.replace")
        if not is_session_id(sid):
            return False
        lineage = self._lineage(sid)
        if lineage is None:
            return False
        reply = self._attempt(self._write_call(sid, "replace", data, [], lineage, "replace"), "replace")
        return reply is not _FAILED and self._written(reply)

    def rotate(self, sid: str) -> str | None:
        """Move the session to a new id and kill the old one, atomically (call it at login, against session
        fixation).  Data, owner and creation time are kept: the absolute lifetime is not reset.  None when the
        session is gone or the server is unreachable."""
        if not is_session_id(sid):
            return None
        for _ in range(_ATTEMPTS):
            new = new_session_id()
            reply = self._attempt(self._rotate_call(sid, new), "rotate")
            if reply is _FAILED or reply == 0:
                return None
            if reply == 1:
                self._rotated(sid, new)
                self.cache.report.count("sets", self._scope)
                return new
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    def destroy(self, sid: str) -> bool:
        """Delete the session; True when there was one.  Raises :class:`~cachewise.errors.InvalidationError` when
        the server is unreachable (a logout must not fail silently)."""
        if not is_session_id(sid):
            return False
        try:
            removed = self._run(self._destroy_call(sid))
        except SERVER_ERRORS as exc:
            self.cache.report.failure("session destroy", exc, self._scope)
            raise self._not_destroyed("destroying a session", exc) from exc
        self.cache.report.count("deletes", self._scope, int(removed))
        return bool(removed)

    def destroy_user(self, user_id: str | int | uuid.UUID) -> int:
        """Delete every session of ``user_id`` (log out everywhere); returns how many there were.  Raises
        :class:`~cachewise.errors.InvalidationError` when the server is unreachable."""
        call = self._destroy_user_call(user_id)
        try:
            destroyed = int(self._run(call))
        except SERVER_ERRORS as exc:
            self.cache.report.failure("session destroy_user", exc, self._scope)
            raise self._not_destroyed("destroying a user's sessions", exc) from exc
        self.cache.report.count("deletes", self._scope, destroyed)
        return destroyed

    def exists(self, sid: str) -> bool:
        """Whether the session is there (does not renew it; False when the server is unreachable)."""
        if not is_session_id(sid):
            return False
        reply = self._attempt(self._exists_call(sid), "exists")
        return reply is not _FAILED and bool(reply)

    # -- async -------------------------------------------------------------------------------------------------
    async def _arun(self, call: _Call) -> Any:
        breaker = self.cache.connection.breaker
        if not breaker.allow():
            raise CircuitOpen("circuit breaker open")
        connection = self.cache.connection
        started = time.perf_counter()
        try:
            if call.script is not None:
                reply = await connection.ascript(call.script, call.keys, call.args)
            else:
                reply = await connection.aexecute_packed(resp.command(*call.args))
        finally:
            self.cache.report.roundtrip(time.perf_counter() - started, self._scope)
        breaker.success()
        return reply

    async def _aattempt(self, call: _Call, operation: str) -> Any:
        try:
            return await self._arun(call)
        except SERVER_ERRORS as exc:
            self.cache.report.failure(f"session {operation}", exc, self._scope)
            return _FAILED

    async def _alineage(self, sid: str) -> str | None:
        known = self._known_lineage(sid)
        if known is not None:
            return known
        reply = await self._aattempt(self._lineage_call(sid), "update")
        if reply is _FAILED or not reply:
            return None
        self._remember(sid, reply.decode())
        return str(reply.decode())

    async def acreate(self, data: Mapping[str, Any], user_id: str | int | uuid.UUID | None = None) -> str:
        """Async :meth:`create`."""
        plan = self._plan_create(data, user_id)
        if plan is None:
            return new_session_id()
        lineage, rest = plan
        for _ in range(_ATTEMPTS):
            sid = new_session_id()
            reply = await self._aattempt(self._create_call(sid, rest), "create")
            if reply is _FAILED or self._written(reply):
                self._remember(sid, lineage)
                return sid
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    async def aget(self, sid: str) -> Session | None:
        """Async :meth:`get`."""
        if not is_session_id(sid):
            return None
        reply = await self._aattempt(self._get_call(sid), "read")
        return None if reply is _FAILED else self._decode(sid, reply)

    async def aupdate(self, sid: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()) -> bool:
        """Async :meth:`update`."""
        removed = self._removed(changes, remove, "SessionStore.aupdate")
        if not is_session_id(sid):
            return False
        lineage = await self._alineage(sid)
        if lineage is None:
            return False
        reply = await self._aattempt(self._write_call(sid, "merge", changes, removed, lineage, "aupdate"), "update")
        return reply is not _FAILED and self._written(reply)

    async def areplace(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Async :meth:`replace`."""
        self._removed(data, (), "SessionStore.areplace")
        if not is_session_id(sid):
            return False
        lineage = await self._alineage(sid)
        if lineage is None:
            return False
        reply = await self._aattempt(self._write_call(sid, "replace", data, [], lineage, "areplace"), "replace")
        return reply is not _FAILED and self._written(reply)

    async def arotate(self, sid: str) -> str | None:
        """Async :meth:`rotate`."""
        if not is_session_id(sid):
            return None
        for _ in range(_ATTEMPTS):
            new = new_session_id()
            reply = await self._aattempt(self._rotate_call(sid, new), "rotate")
            if reply is _FAILED or reply == 0:
                return None
            if reply == 1:
                self._rotated(sid, new)
                self.cache.report.count("sets", self._scope)
                return new
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    async def adestroy(self, sid: str) -> bool:
        """Async :meth:`destroy`."""
        if not is_session_id(sid):
            return False
        try:
            removed = await self._arun(self._destroy_call(sid))
        except SERVER_ERRORS as exc:
            self.cache.report.failure("session destroy", exc, self._scope)
            raise self._not_destroyed("destroying a session", exc) from exc
        self.cache.report.count("deletes", self._scope, int(removed))
        return bool(removed)

    async def adestroy_user(self, user_id: str | int | uuid.UUID) -> int:
        """Async :meth:`destroy_user`."""
        call = self._destroy_user_call(user_id)
        try:
            destroyed = int(await self._arun(call))
        except SERVER_ERRORS as exc:
            self.cache.report.failure("session destroy_user", exc, self._scope)
            raise self._not_destroyed("destroying a user's sessions", exc) from exc
        self.cache.report.count("deletes", self._scope, destroyed)
        return destroyed

    async def aexists(self, sid: str) -> bool:
        """Async :meth:`exists`."""
        if not is_session_id(sid):
            return False
        reply = await self._aattempt(self._exists_call(sid), "exists")
        return reply is not _FAILED and bool(reply)

    def __repr__(self) -> str:
        cap = "None" if self.absolute_ttl is None else f"{self.absolute_ttl:g}"
        return (
            f"SessionStore(namespace={self.cache.namespace!r}, prefix={self.prefix!r}, ttl={self.ttl:g}, "
            f"sliding={self.sliding}, absolute_ttl={cap})"
        )
