"""Server-side sessions for ASGI applications: a pure ASGI middleware on :class:`cachewise.sessions.SessionStore`.

The cookie holds only the session id; the data lives on the server, with the store's idle and absolute expiry.

* ``scope["session"]`` (Starlette's and FastAPI's ``request.session``) and ``request.state.session`` are a
  :class:`Session`, a mutable mapping that knows what changed.
* The id in a cookie is adopted only when it is well formed (``store.is_valid_id``) *and* names a live session on
  the server.  An unknown, expired, forged or malformed id gives a fresh empty session, and the id is never echoed:
  when the application stores data, a new server-generated id is issued (starsessions' fixation weakness).
* Nothing is stored and no cookie is sent until the application writes data (no millions of empty sessions).
* Write-back only when something changed, and then only the keys that changed (``store.aupdate(..., remove=...)``),
  so two parallel requests that touch different keys do not undo each other.  Changes are found by comparing with a
  snapshot taken at load time, so ``session["cart"].append(x)`` is seen too.
* ``session.clear()`` (logout) destroys the server entry and expires the cookie; a session emptied key by key is
  destroyed the same way.  Data written after ``clear()`` goes into a brand new session with a new id.
* ``session.rotate()`` (call it at login) gives the session a new id after the request, the old id dead at once.
* Cookie: ``HttpOnly`` always, ``Secure`` unless ``secure=False`` (plain-http development), ``SameSite=Lax`` by
  default, ``Path``/``Domain`` as configured, ``Max-Age`` when ``max_age`` is given (else a browser-session cookie;
  ``max_age=store.absolute_ttl`` matches the server's absolute limit).  A response that used the session gets
  ``Vary: Cookie``.
* The store is written when the response starts (before the client can send its next request).  Changes made after
  that (in a streaming body) are saved when the application returns, if the session already has an id.
* Server down: the request still succeeds, with an empty session and no cookie change; the store logs the failure.
  Store errors never turn into a 500.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InvalidationError, InvalidKeyError, SerializationError
from ..sessions import SessionDataError, SessionStore
from .types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

__all__ = ["Session", "SessionMiddleware"]

log = logging.getLogger("cachewise.asgi")


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COOKIE_VALUE = re.compile(r"^[!#-+\--:<-\[\]-~]*$")  # RFC 6265 cookie-octet
_MAX_CANDIDATES = 3
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


class Session(dict[str, Any]):
    """The session of one request: a plain ``dict`` (so ``JSONResponse(request.session)`` works) that also knows
    whether it was read (for ``Vary: Cookie``), what changed since it was loaded (compared with a snapshot, so changes
    inside values count), and whether the application called :meth:`clear` (logout) or :meth:`rotate` (login).
    """

    __slots__ = ("_cleared", "_id", "_rotate", "_snapshot", "accessed")

    def __init__(self, data: Mapping[str, Any] | None = None, session_id: str | None = None) -> None:
        super().__init__(data or {})
        self._snapshot: dict[str, Any] = copy.deepcopy(self._plain())
        self._id = session_id
        self._cleared = False
        self._rotate = False
        self.accessed = False

    # -- reads mark the session as used (the response then varies by cookie) ------------------------------------
    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return super().__iter__()

    def __len__(self) -> int:
        self.accessed = True
        return super().__len__()

    def keys(self) -> dict_keys[str, Any]:
        self.accessed = True
        return super().keys()

    def values(self) -> dict_values[str, Any]:
        self.accessed = True
        return super().values()

    def items(self) -> dict_items[str, Any]:
        self.accessed = True
        return super().items()

    def __repr__(self) -> str:  # never shows the id: it is a credential
        return f"Session({'new' if self._id is None else 'existing'}, keys={sorted(super().keys())!r})"

    # -- writes (found by comparison with the snapshot, whichever dict method made them) --------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        self.accessed = True
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        super().__delitem__(key)

    def clear(self) -> None:
        """Empty the session: the server entry is destroyed and the cookie expired (logout)."""
        self.accessed = True
        super().clear()
        self._cleared = True

    def rotate(self) -> None:
        """Give this session a new id after the request (call it at login); the old id stops working at once."""
        self.accessed = True
        self._rotate = True

    def mark_accessed(self) -> None:  # Starlette's request.session calls this
        self.accessed = True

    # -- state ------------------------------------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The server-side id, or None while the session is new (nothing stored yet)."""
        return self._id

    @property
    def is_new(self) -> bool:
        return self._id is None

    @property
    def modified(self) -> bool:
        return self._cleared or self._rotate or self._plain() != self._snapshot

    def changes(self) -> tuple[dict[str, Any], list[str]]:
        """(keys set or changed since load → their values, keys removed since load)."""
        now = self._plain()
        changed = {k: v for k, v in now.items() if k not in self._snapshot or self._snapshot[k] != v}
        removed = [k for k in self._snapshot if k not in now]
        return changed, removed

    def _plain(self) -> dict[str, Any]:
        """A plain copy of the contents, without counting as a read."""
        return dict.copy(self)

    def _saved(self, session_id: str | None) -> None:
        self._id = session_id
        self._snapshot = copy.deepcopy(self._plain())
        self._cleared = False
        self._rotate = False


def _seconds(value: int | float | timedelta | None) -> int | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        raise ValueError("max_age must be at least 1 second (or None for a browser-session cookie)")
    return int(seconds)


def _cookie_values(headers: Any, name: str) -> list[str]:
    """Every value of cookie ``name`` in the request's Cookie headers, in order."""
    found: list[str] = []
    for key, raw in headers or ():
        if bytes(key).lower() != b"cookie":
            continue
        for part in bytes(raw).decode("latin-1").split(";"):
            cname, sep, value = part.strip().partition("=")
            if sep and cname.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found.append(value)
    return found


class SessionMiddleware:
    """Pure ASGI server-side sessions (see the module docstring).

    >>> app = SessionMiddleware(app, SessionStore(cache, ttl=1800, absolute_ttl=12 * 3600), secure=True)
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        *,
        cookie_name: str = "session",
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        samesite: Literal["lax", "strict", "none"] = "lax",
        max_age: int | float | timedelta | None = None,
    ) -> None:
        if not _TOKEN.match(cookie_name):
            raise ValueError(f"cookie_name {cookie_name!r} is not a valid cookie name")
        same_site = str(samesite).lower()
        if same_site not in ("lax", "strict", "none"):
            raise ValueError("samesite must be 'lax', 'strict' or 'none'")
        if same_site == "none" and not secure:
            raise ValueError("samesite='none' requires secure=True (browsers reject it otherwise)")
        if not path.startswith("/") or not _COOKIE_VALUE.match(path) or ";" in path:
            raise ValueError(f"cookie path {path!r} must start with '/' and contain no ';' or control characters")
        if domain is not None and (not domain or ";" in domain or not _COOKIE_VALUE.match(domain)):
            raise ValueError(f"cookie domain {domain!r} is not valid")
        if cookie_name.startswith("__Host-") and (not secure or path != "/" or domain is not None):
            raise ValueError("a '__Host-' cookie needs secure=True, path='/' and no domain")
        if cookie_name.startswith("__Secure-") and not secure:
            raise ValueError("a '__Secure-' cookie needs secure=True")
        self.app = app
        self.store = store
        self.cookie_name = cookie_name
        self.path = path
        self.domain = domain
        self.secure = secure
        self.samesite = same_site
        self.max_age = _seconds(max_age)
        flags = [f"Path={path}"]
        if domain is not None:
            flags.append(f"Domain={domain}")
        flags.append("HttpOnly")
        if secure:
            flags.append("Secure")
        flags.append(f"SameSite={same_site.capitalize()}")
        self._flags = "; ".join(flags)

    # -- cookies ----------------------------------------------------------------------------------------------------
    def _set_cookie(self, session_id: str) -> tuple[bytes, bytes]:
        max_age = f"; Max-Age={self.max_age}" if self.max_age is not None else ""
        return b"set-cookie", f"{self.cookie_name}={session_id}{max_age}; {self._flags}".encode("latin-1")

    def _expire_cookie(self) -> tuple[bytes, bytes]:
        return b"set-cookie", f'{self.cookie_name}=""; Max-Age=0; Expires={_EXPIRED}; {self._flags}'.encode("latin-1")

    # -- load -------------------------------------------------------------------------------------------------------
    async def load(self, scope: Scope) -> tuple[Session, bool]:
        """The session named by the request's cookie, or a fresh empty one; and whether the request had our cookie."""
        values = _cookie_values(scope.get("headers"), self.cookie_name)
        candidates = [v for v in values if self.store.is_valid_id(v)][:_MAX_CANDIDATES]
        for session_id in candidates:
            try:
                data = await self.store.aget(session_id)
            except Exception as exc:  # the store should fail open itself; never let it become a 500
                log.warning("session load failed (%s: %s); carrying on with an empty session", type(exc).__name__, exc)
                data = None
            if isinstance(data, dict):
                return Session(data, session_id), True
        return Session(), bool(values)

    # -- save -------------------------------------------------------------------------------------------------------
    async def save(self, session: Session, had_cookie: bool) -> list[tuple[bytes, bytes]]:
        """Write what changed to the store; the Set-Cookie headers to send (none when nothing changed)."""
        if not session.modified:
            return []
        try:
            return await self._save(session, had_cookie)
        except (SerializationError, InvalidKeyError, SessionDataError):
            raise  # misuse (a value the serializer cannot encode, a key that is not a str...): loud
        except Exception as exc:  # the store fails open by itself; anything else must not become a 500 either
            log.warning("session save failed (%s: %s); the response goes out unchanged", type(exc).__name__, exc)
            return []

    async def _save(self, session: Session, had_cookie: bool) -> list[tuple[bytes, bytes]]:
        store = self.store
        old_id = session.id
        data = session._plain()
        if session._cleared or not data:
            # Logout (or emptied): the old entry dies; data written after clear() starts a brand new session.
            if old_id is not None:
                try:
                    await store.adestroy(old_id)
                except InvalidationError as exc:
                    # The response is already decided; the browser still forgets the id (cookie expired below).
                    log.error(
                        "logout: the session could not be destroyed on the server (%s); it stays valid until "
                        "it expires",
                        exc,
                    )
            if data:
                new_id = await store.acreate(data)
                session._saved(new_id)
                return [self._set_cookie(new_id)]
            session._saved(None)
            return [self._expire_cookie()] if (old_id is not None or had_cookie) else []
        if old_id is None:
            new_id = await store.acreate(data)
            session._saved(new_id)
            return [self._set_cookie(new_id)]
        changed, removed = session.changes()
        if session._rotate:
            rotated = await store.arotate(old_id)
            if rotated is None:  # gone meanwhile: start over with what the application holds
                new_id = await store.acreate(data)
                session._saved(new_id)
                return [self._set_cookie(new_id)]
            if changed or removed:
                await store.aupdate(rotated, changed, remove=removed)
            session._saved(rotated)
            return [self._set_cookie(rotated)]
        if not await store.aupdate(old_id, changed, remove=removed):
            # Expired or destroyed (a parallel logout) during the request: do not resurrect it.
            log.info("session changes not saved: the session ended during the request")
        session._saved(old_id)
        return []

    # -- ASGI -------------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session, had_cookie = await self.load(scope)
        scope["session"] = session
        state = scope.setdefault("state", {})
        if isinstance(state, MutableMapping):
            state["session"] = session
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                await self._save_late(session, had_cookie)  # a websocket gets no cookie: existing sessions only
            return

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                cookies = await self.save(session, had_cookie)
                if cookies or session.accessed:
                    headers = list(message.get("headers", ()))
                    headers.extend(cookies)
                    if session.accessed and not any(
                        bytes(k).lower() == b"vary" and b"cookie" in bytes(v).lower() for k, v in headers
                    ):
                        headers.append((b"vary", b"Cookie"))
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)
        if started:
            await self._save_late(session, had_cookie)

    async def _save_late(self, session: Session, had_cookie: bool) -> None:
        """Save changes made when no cookie can be sent any more (after the response started, or in a websocket)."""
        if not session.modified:
            return
        if session.id is None and session._plain():
            log.warning("session data written after the response started is lost: a new session needs a cookie")
            return
        if session._rotate:
            log.warning("session.rotate() after the response started is ignored: the new id could not be sent")
            session._rotate = False
        await self.save(session, had_cookie)
