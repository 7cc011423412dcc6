"""Server-side sessions: unguessable ids, sliding *and* absolute expiry, rotation at login, logout everywhere.

>>> store = SessionStore(cache, ttl=1800, sliding=True, absolute_ttl=12 * 3600)
>>> sid = store.create({"user_id": 7})          # the cookie value
>>> store.get(sid)                              # {"user_id": 7}, and the idle TTL starts again
>>> store.update(sid, {"cart": [1, 2]})         # merge: other keys are left as they are
>>> sid = store.rotate(sid)                     # at login: new id, same data, the old id is dead
>>> store.destroy_user(7)                       # log user 7 out everywhere

**Ids** are 256 random bits (see :mod:`cachewise.sessions.ids`), checked for their exact form before any server
call.  A session is only ever stored under an id this module generated: :meth:`~SessionStore.update` and
:meth:`~SessionStore.replace` of an unknown id return False instead of creating it (session fixation: an
attacker-chosen cookie value is never persisted).

**Expiry.**  ``ttl`` is the idle timeout; ``absolute_ttl`` (default 12 h, None for no cap) bounds the whole life of
a session, counted from its creation.  Every write (create, update, replace, rotate) renews the idle TTL; with
``sliding=True`` every read does too.  The renewed TTL is ``min(ttl, created + absolute_ttl - now)``, computed inside
the server's Lua script from the server's clock (``TIME``), so the clients' clocks never matter; a session therefore
dies at its absolute cap however often it is used, and :meth:`~SessionStore.rotate` keeps the creation time (a
rotation does not extend the cap).

**Storage.**  One hash per session at ``<namespace>:_cw:s:<prefix>:{<first 3 characters of the id>}<the rest>``
(the braces pick its hash slot: a rotation keeps those characters, so it stays one atomic ``RENAME`` on a Cluster): a
field ``d:<key>`` per data key, each value serialized on its own by the cache's serializer (and HMAC-signed when the
cache has a ``signing_key``, bound to the session's lineage and the field, so that a value cannot be moved to another
session), plus hidden metadata (``m:c`` created at, ``m:l`` lineage, ``m:u`` owner).  Sessions of a user are listed
in a set at ``<namespace>:_cw:u:<prefix>:<user>`` (a slot of its own), which lives at least as long as any session
it lists: with an absolute lifetime, as long as that lifetime from the last session added; without one, renewed by
each use of one of its sessions.  Each script touches one slot: the session's, or the index's (``index.lua``); a call
that changes both sends both parts in one round trip, the index first when it adds an id (an id listed before its
session exists is harmless; a session its owner's index does not list would survive a logout everywhere).  An index
may list sessions that have expired or moved since (harmless: :meth:`~SessionStore.destroy_user` destroys only the
sessions still owned by that user, and the ids of gone sessions are dropped once an index lists more than 32).  Every
key is written with its TTL in the same atomic step.

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

import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, InvalidationError
from ..failures import SERVER_ERRORS
from ..runner import Flow, Send, arun, run
from ..transport.command import Command
from ..transport.scripts import Script
from ..ttl import to_seconds
from .codec import Ignored, SessionCodec
from .ids import fingerprint, is_session_id, new_session_id, owner_token, rotated_id

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = ["Session", "SessionStore"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_MEMO = 4096
_ATTEMPTS = 3  # fresh ids tried when one is taken (with 256 random bits, never more than one in practice)
#: An index listing more ids than this drops those of sessions that are gone (one more round trip, now and then).
PRUNE_AT = 32

_COMMON = "common.lua"
_GET = Script.beside(__package__ or __name__, "get.lua", prelude=_COMMON)
_WRITE = Script.beside(__package__ or __name__, "write.lua", prelude=_COMMON)
_ROTATE = Script.beside(__package__ or __name__, "rotate.lua", prelude=_COMMON)
_DESTROY = Script.beside(__package__ or __name__, "destroy.lua")
_INDEX = Script.beside(__package__ or __name__, "index.lua")

#: A session's data as :meth:`SessionStore.get` returns it (the request-facing, change-tracking session of the ASGI
#: middleware is :class:`cachewise.asgi.sessions.Session`).
Session = dict[str, Any]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _replies(reply: Any, parts: int) -> list[Any]:
    return reply if parts > 1 else [reply]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else ""


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
        #: How long an index is kept alive when an id is added: the absolute lifetime (no session it lists can live
        #: longer), or the idle TTL, renewed by each use of its sessions, when there is no cap.
        self._index_ms = self._absolute_ms or self._idle_ms
        self._space = cache.keyspace
        self._executor = cache.executor
        self._report = cache.report
        self._codec = SessionCodec(
            cache.serializer, cache.max_value_bytes, cache.signer, self._space.session_context(prefix)
        )
        self._signing = cache.signer is not None
        self._scope = cache.report.scope(f"sessions:{prefix}")
        #: What this process learned of sessions (never changes for an id, or is checked by the server): lineages
        #: (spare a read before a signed write) and owners (spare one before a rotation).
        self._lineages: dict[str, str] = {}
        self._owners: dict[str, str] = {}

    # -- keys and commands (pure) ---------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """A fresh session id (see :func:`~cachewise.sessions.ids.new_session_id`)."""
        return new_session_id()

    @staticmethod
    def is_valid_id(text: object) -> bool:
        """Whether ``text`` has the form of a session id; anything else never reaches the server."""
        return is_session_id(text)

    def key(self, sid: str) -> str:
        """The server key of a session."""
        return self._space.session(self.prefix, sid)

    def index_key(self, user_id: str | int | uuid.UUID) -> str:
        """The server key of a user's set of session ids."""
        return self._space.session_index(self.prefix, owner_token(user_id))

    def _owner_of(self, data: Mapping[str, Any]) -> str:
        """The owner token that a write of ``data`` sets ('' when it sets none)."""
        if self.user_key is None:
            return ""
        user = data.get(self.user_key)
        return "" if user is None else owner_token(user)

    def _script(self, name: str, script: Script, keys: list[str], args: list[Any]) -> Command:
        return Command.script(f"session {name}", script, keys, args)

    def _index(self, owner: str, ttl_ms: int, ops: Iterable[str]) -> Command:
        """Add (``+id``) and remove (``-id``) ids of ``owner``'s index, keeping it alive ``ttl_ms`` (0: as it is)."""
        return self._script("index", _INDEX, [self._space.session_index(self.prefix, owner)], [ttl_ms, *ops])

    def _write(self, sid: str, mode: str, lineage: str, owner: str, fields: list[Any], removed: list[str]) -> Command:
        args = [mode, self._idle_ms, self._absolute_ms, lineage, owner, len(fields) // 2, *fields, *removed]
        return self._script(mode if mode == "create" else "update", _WRITE, [self.key(sid)], args)

    def _owned(self, owner: str, command: Command, sid: str) -> Command:
        """``command`` behind the addition of ``sid`` to ``owner``'s index (when there is an owner)."""
        if not owner:
            return command
        return Command.join(command.name, [self._index(owner, self._index_ms, [f"+{sid}"]), command])

    def _remember(self, memo: dict[str, str], sid: str, value: str) -> None:
        if len(memo) >= _MEMO:
            memo.clear()
        memo[sid] = value

    def _forget(self, sid: str) -> None:
        self._lineages.pop(sid, None)
        self._owners.pop(sid, None)

    def _not_destroyed(self, what: str, exc: BaseException) -> InvalidationError:
        return InvalidationError(
            f"{what} did not reach the server ({type(exc).__name__}: {exc}); the session(s) may stay valid until "
            "they expire: retry, and do not tell the user they are logged out until it succeeds"
        )

    # -- flows: every operation, written once ------------------------------------------------------------------
    def _quietly(self, command: Command) -> Flow[Any]:
        """Send a command whose failure changes nothing for the caller (index upkeep: its lapses are harmless)."""
        try:
            return (yield Send(command, self._scope))
        except SERVER_ERRORS:
            return None

    def _pruned(self, owner: str) -> Flow[None]:
        """Drop from ``owner``'s index the ids of sessions that are gone (those it lists now and then find missing)."""
        index = self._space.session_index(self.prefix, owner)
        members = yield from self._quietly(Command.plain("session index", "SMEMBERS", index, keys=[index]))
        ids = [m.decode(errors="replace") for m in members or ()]
        sessions = [i for i in ids if is_session_id(i)]
        alive: list[Any] = []
        if sessions:
            checks = [Command.plain("session index", "EXISTS", self.key(i), keys=[self.key(i)]) for i in sessions]
            reply = yield from self._quietly(Command.join("session index", checks))
            if reply is None:
                return
            alive = _replies(reply, len(checks))
        living = {sid for sid, exists in zip(sessions, alive) if exists}
        gone = [f"-{i}" for i in ids if i not in living]
        if gone:
            yield from self._quietly(self._index(owner, 0, gone))

    def _get(self, sid: str) -> Flow[Session | None]:
        if not is_session_id(sid):
            return None
        args = [self._idle_ms, self._absolute_ms, "1" if self.sliding else "0"]
        try:
            reply = yield Send(self._script("read", _GET, [self.key(sid)], args), self._scope)
        except SERVER_ERRORS:
            return None
        if not reply:
            self._report.count("misses", self._scope)
            return None
        renewed, fields = int(reply[0]), dict(zip(reply[1::2], reply[2::2]))
        try:
            data = self._codec.decode(fields)
        except Ignored as ignored:
            self._report.count(ignored.counter, self._scope)
            self._report.warn(
                f"session:{ignored.counter}", f"session {fingerprint(sid)} ignored (treated as no session): {ignored}"
            )
            return None
        self._report.count("hits", self._scope)
        if self._signing and b"m:l" in fields:
            self._remember(self._lineages, sid, fields[b"m:l"].decode(errors="replace"))
        owner = _text(fields.get(b"m:u"))
        self._remember(self._owners, sid, owner)
        if renewed and owner and not self._absolute_ms:  # no cap: the index must outlive this renewal too
            yield from self._quietly(self._index(owner, renewed, ()))
        return data

    def _create(self, data: Mapping[str, Any], user_id: str | int | uuid.UUID | None) -> Flow[str]:
        lineage = secrets.token_hex(8)
        fields = self._codec.encode(data, lineage, "SessionStore.create")
        owner = owner_token(user_id) if user_id is not None else self._owner_of(data)
        if not fields and not owner:
            return new_session_id()
        for _ in range(_ATTEMPTS):
            sid = new_session_id()
            command = self._owned(owner, self._write(sid, "create", lineage, owner, fields, []), sid)
            try:
                replies = _replies((yield Send(command, self._scope)), command.count)
            except SERVER_ERRORS:
                return sid  # not stored: the next request finds no session
            if replies[-1][0] == 1:
                self._report.count("sets", self._scope)
                if self._signing:
                    self._remember(self._lineages, sid, lineage)
                self._remember(self._owners, sid, owner)
                if owner and replies[0] > PRUNE_AT:
                    yield from self._pruned(owner)
                return sid
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    def _lineage(self, sid: str) -> Flow[str | None]:
        """The lineage a write must sign for ('' when not signing); None when the session is gone or unreachable."""
        if not self._signing:
            return ""
        known = self._lineages.get(sid)
        if known is not None:
            return known
        key = self.key(sid)
        try:
            found = yield Send(Command.plain("session update", "HGET", key, "m:l", keys=[key]), self._scope)
        except SERVER_ERRORS:
            return None
        if not found:
            return None
        self._remember(self._lineages, sid, found.decode())
        return str(found.decode())

    def _update(self, sid: str, mode: str, data: Mapping[str, Any], removed: list[str], where: str) -> Flow[bool]:
        if not is_session_id(sid):
            return False
        lineage = yield from self._lineage(sid)
        if lineage is None:
            return False
        fields = self._codec.encode(data, lineage, where)
        owner = self._owner_of(data)
        command = self._owned(owner, self._write(sid, mode, lineage, owner, fields, removed), sid)
        try:
            status = _replies((yield Send(command, self._scope)), command.count)[-1]
        except SERVER_ERRORS:
            return False
        if status[0] != 1:
            return False
        self._report.count("sets", self._scope)
        previous, life = _text(status[1]), int(status[2])
        self._remember(self._owners, sid, owner or previous)
        if owner and previous and previous != owner:  # moved to another user: off the old one's index
            yield from self._quietly(self._index(previous, 0, [f"-{sid}"]))
        elif previous and not owner and not self._absolute_ms:
            yield from self._quietly(self._index(previous, life, ()))
        return True

    def _rotate(self, sid: str) -> Flow[str | None]:
        if not is_session_id(sid):
            return None
        owner = self._owners.get(sid)
        if owner is None:
            key = self.key(sid)
            try:
                found = yield Send(Command.plain("session rotate", "HGET", key, "m:u", keys=[key]), self._scope)
            except SERVER_ERRORS:
                return None
            owner = _text(found)
        for _ in range(_ATTEMPTS):
            new = rotated_id(sid)
            args = [self._idle_ms, self._absolute_ms, owner]
            command = self._owned(owner, self._script("rotate", _ROTATE, [self.key(sid), self.key(new)], args), new)
            try:
                status = _replies((yield Send(command, self._scope)), command.count)[-1]
            except SERVER_ERRORS:
                return None
            if status[0] == 0:
                return None
            if status[0] == -3:  # another owner than this process thought: list the new id in theirs
                owner = _text(status[1])
                continue
            if status[0] == 1:
                lineage = self._lineages.get(sid)
                self._forget(sid)
                if lineage is not None:
                    self._remember(self._lineages, new, lineage)
                self._remember(self._owners, new, owner)
                self._report.count("sets", self._scope)
                if owner:
                    yield from self._quietly(self._index(owner, 0, [f"-{sid}"]))
                return new
        raise RuntimeError("no free session id after several fresh random ids: is secrets.token_urlsafe patched?")

    def _destroy(self, sid: str) -> Flow[bool]:
        if not is_session_id(sid):
            return False
        self._forget(sid)
        try:
            removed, owner = yield Send(self._script("destroy", _DESTROY, [self.key(sid)], ["*"]), self._scope)
        except SERVER_ERRORS as exc:
            raise self._not_destroyed("destroying a session", exc) from exc
        if _text(owner):
            yield from self._quietly(self._index(_text(owner), 0, [f"-{sid}"]))
        self._report.count("deletes", self._scope, int(removed))
        return bool(removed)

    def _destroy_user(self, user_id: str | int | uuid.UUID) -> Flow[int]:
        token = owner_token(user_id)
        index = self._space.session_index(self.prefix, token)
        try:
            members = yield Send(Command.plain("session destroy_user", "SMEMBERS", index, keys=[index]), self._scope)
            ids = [m.decode(errors="replace") for m in members]
            sessions = [i for i in ids if is_session_id(i)]
            parts = [self._script("destroy_user", _DESTROY, [self.key(i)], [token]) for i in sessions]
            parts.append(self._index(token, 0, [f"-{i}" for i in ids]))
            replies = _replies((yield Send(Command.join("session destroy_user", parts), self._scope)), len(parts))
        except SERVER_ERRORS as exc:
            raise self._not_destroyed("destroying a user's sessions", exc) from exc
        for sid in sessions:
            self._forget(sid)
        destroyed = sum(int(reply[0]) for reply in replies[:-1])
        self._report.count("deletes", self._scope, destroyed)
        return destroyed

    def _exists(self, sid: str) -> Flow[bool]:
        if not is_session_id(sid):
            return False
        key = self.key(sid)
        try:
            return bool((yield Send(Command.plain("session exists", "HEXISTS", key, "m:c", keys=[key]), self._scope)))
        except SERVER_ERRORS:
            return False

    # -- the shells -------------------------------------------------------------------------------------------------
    def create(self, data: Mapping[str, Any], user_id: str | int | uuid.UUID | None = None) -> str:
        """Store a new session and return its id.  ``user_id`` (default ``data[user_key]``) lists it for
        :meth:`destroy_user`.  Empty data with no user: the id is returned and nothing is stored."""
        return run(self._executor, self._create(data, user_id))

    def get(self, sid: str) -> Session | None:
        """The session's data, or None (unknown, expired, malformed or forged id, or the server is unreachable).
        With ``sliding=True`` the idle TTL starts again (never past the absolute lifetime)."""
        return run(self._executor, self._get(sid))

    def update(self, sid: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()) -> bool:
        """Set the keys of ``changes`` and delete the ``remove`` keys, leaving the others as they are (atomic, field
        by field: see the merge rule).  False when the session is gone (it is never created here)."""
        removed = self._codec.removed(changes, remove, "SessionStore.update")
        return run(self._executor, self._update(sid, "merge", changes, removed, "update"))

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Make ``data`` the whole session (keys not in it are deleted).  False when the session is gone."""
        self._codec.removed(data, (), "SessionStore.replace")
        return run(self._executor, self._update(sid, "replace", data, [], "replace"))

    def rotate(self, sid: str) -> str | None:
        """Move the session to a new id and kill the old one, atomically (call it at login, against session
        fixation).  Data, owner and creation time are kept: the absolute lifetime is not reset.  None when the
        session is gone or the server is unreachable."""
        return run(self._executor, self._rotate(sid))

    def destroy(self, sid: str) -> bool:
        """Delete the session; True when there was one.  Raises :class:`~cachewise.errors.InvalidationError` when
        the server is unreachable (a logout must not fail silently)."""
        return run(self._executor, self._destroy(sid))

    def destroy_user(self, user_id: str | int | uuid.UUID) -> int:
        """Delete every session of ``user_id`` (log out everywhere); returns how many there were.  Raises
        :class:`~cachewise.errors.InvalidationError` when the server is unreachable."""
        return run(self._executor, self._destroy_user(user_id))

    def exists(self, sid: str) -> bool:
        """Whether the session is there (does not renew it; False when the server is unreachable)."""
        return run(self._executor, self._exists(sid))

    async def acreate(self, data: Mapping[str, Any], user_id: str | int | uuid.UUID | None = None) -> str:
        """Async :meth:`create`."""
        return await arun(self._executor, self._create(data, user_id))

    async def aget(self, sid: str) -> Session | None:
        """Async :meth:`get`."""
        return await arun(self._executor, self._get(sid))

    async def aupdate(self, sid: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()) -> bool:
        """Async :meth:`update`."""
        removed = self._codec.removed(changes, remove, "SessionStore.aupdate")
        return await arun(self._executor, self._update(sid, "merge", changes, removed, "aupdate"))

    async def areplace(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Async :meth:`replace`."""
        self._codec.removed(data, (), "SessionStore.areplace")
        return await arun(self._executor, self._update(sid, "replace", data, [], "areplace"))

    async def arotate(self, sid: str) -> str | None:
        """Async :meth:`rotate`."""
        return await arun(self._executor, self._rotate(sid))

    async def adestroy(self, sid: str) -> bool:
        """Async :meth:`destroy`."""
        return await arun(self._executor, self._destroy(sid))

    async def adestroy_user(self, user_id: str | int | uuid.UUID) -> int:
        """Async :meth:`destroy_user`."""
        return await arun(self._executor, self._destroy_user(user_id))

    async def aexists(self, sid: str) -> bool:
        """Async :meth:`exists`."""
        return await arun(self._executor, self._exists(sid))

    def __repr__(self) -> str:
        cap = "None" if self.absolute_ttl is None else f"{self.absolute_ttl:g}"
        return (
            f"SessionStore(namespace={self.cache.namespace!r}, prefix={self.prefix!r}, ttl={self.ttl:g}, "
            f"sliding={self.sliding}, absolute_ttl={cap})"
        )
