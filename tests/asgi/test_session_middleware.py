"""SessionMiddleware through real ASGI apps (Starlette and FastAPI over httpx's ASGI transport), on the embedded
Valkey and the system Redis: cookies only when there is data, cookie flags, forged/unknown/expired ids never adopted,
rotation at login, logout, write-back only of what changed, and a server that is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cachewise import Cache, InvalidationError
from cachewise.asgi import Session, SessionMiddleware
from cachewise.server.embedded import EmbeddedServer
from cachewise.sessions import SessionStore
from tests.conftest import client_for

NAME = "sid"


# -- the application ------------------------------------------------------------------------------------------------
async def read(request: Request) -> Response:
    session = session_of(request)
    assert request.state.session is session
    return JSONResponse({"data": session, "new": session.is_new})


async def write(request: Request) -> Response:
    request.session.update(request.query_params)
    return JSONResponse({"ok": True})


async def append(request: Request) -> Response:
    request.session.setdefault("cart", [])
    request.session["cart"].append(int(request.query_params["item"]))  # a change inside a value
    return JSONResponse({"ok": True})


async def remove(request: Request) -> Response:
    request.session.pop(request.query_params["key"], None)
    return JSONResponse({"ok": True})


def session_of(request: Request) -> Session:
    session = request.session
    assert isinstance(session, Session)
    return session


async def login(request: Request) -> Response:
    request.session["user_id"] = 7
    session_of(request).rotate()
    return JSONResponse({"ok": True})


async def logout(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({"ok": True})


async def noop(request: Request) -> Response:
    return JSONResponse({"ok": True})


RELEASE: dict[str, asyncio.Event] = {}


async def slow_write(request: Request) -> Response:
    session = request.session
    _ = dict(session)  # loaded before the other request writes
    await RELEASE[request.query_params["wait"]].wait()
    session[request.query_params["key"]] = request.query_params["value"]
    return JSONResponse({"ok": True})


ROUTES = [
    Route("/read", read),
    Route("/write", write),
    Route("/append", append),
    Route("/remove", remove),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/noop", noop),
    Route("/slow-write", slow_write),
]


def app_for(store: SessionStore, **options: Any) -> Starlette:
    options.setdefault("cookie_name", NAME)
    return Starlette(routes=ROUTES, middleware=[Middleware(SessionMiddleware, store=store, **options)])


def client(app: Any, scheme: str = "https") -> httpx.AsyncClient:
    # https: the cookie jar only sends Secure cookies over https.
    transport = httpx.ASGITransport(app=app, client=("1.2.3.4", 123))
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://test")


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_attrs(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, {attribute lower-cased: value}) of one Set-Cookie header."""
    first, *attrs = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    parsed: dict[str, str] = {}
    for attr in attrs:
        key, _, val = attr.partition("=")
        parsed[key.lower()] = val
    return name, value, parsed


def the_cookie(response: httpx.Response) -> tuple[str, dict[str, str]]:
    headers = set_cookies(response)
    assert len(headers) == 1, headers
    name, value, attrs = cookie_attrs(headers[0])
    assert name == NAME
    return value, attrs


@pytest.fixture
def store(cache: Cache) -> SessionStore:
    return SessionStore(cache, ttl=60, absolute_ttl=3600)


class Spy:
    """Counts the store's writes (wraps its async write methods)."""

    WRITES = ("acreate", "aupdate", "areplace", "arotate", "adestroy")

    def __init__(self, store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for name in (*self.WRITES, "aget"):
            original = getattr(store, name)

            def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.calls.append((_name, args, kwargs))
                return _original(*args, **kwargs)

            monkeypatch.setattr(store, name, wrapper)

    @property
    def writes(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        return [call for call in self.calls if call[0] in self.WRITES]


def namespace_keys(server_url: str, namespace: str) -> list[bytes]:
    raw = client_for(server_url)
    try:
        return list(raw.scan_iter(match=f"{namespace}:*", count=1000))
    finally:
        raw.close()


# -- cookies only for data, and their flags -------------------------------------------------------------------------
async def test_nothing_is_stored_or_sent_until_the_app_writes(store: SessionStore, server_url: str) -> None:
    async with client(app_for(store)) as http:
        for path in ("/noop", "/read", "/read"):
            response = await http.get(path)
            assert response.status_code == 200 and set_cookies(response) == []
        assert (await http.get("/read")).json() == {"data": {}, "new": True}
    assert namespace_keys(server_url, store.cache.namespace) == []


async def test_writing_sets_a_server_generated_id_with_every_flag(store: SessionStore) -> None:
    async with client(app_for(store)) as http:
        response = await http.get("/write", params={"color": "blue"})
        sid, attrs = the_cookie(response)
        assert store.is_valid_id(sid)
        assert attrs == {"path": "/", "httponly": "", "secure": "", "samesite": "Lax"}
        assert "cookie" in response.headers["vary"].lower()
        assert await store.aget(sid) == {"color": "blue"}
        again = await http.get("/read")
        assert again.json() == {"data": {"color": "blue"}, "new": False}
        assert set_cookies(again) == []  # an unchanged session sends no cookie


async def test_cookie_options(store: SessionStore) -> None:
    app = app_for(store, secure=False, path="/app", domain="example.test", samesite="strict", max_age=3600)
    async with client(app, scheme="http") as http:
        _, attrs = the_cookie(await http.get("/write", params={"a": "1"}))
    assert attrs == {"path": "/app", "domain": "example.test", "httponly": "", "samesite": "Strict", "max-age": "3600"}
    assert "secure" not in attrs
    # The standard library's parser agrees on the header's form.
    async with client(app_for(store), scheme="https") as http:
        header = set_cookies(await http.get("/write", params={"a": "1"}))[0]
    morsel = SimpleCookie(header)[NAME]
    assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"


def test_bad_cookie_options_are_refused(store: SessionStore) -> None:
    for options in (
        {"samesite": "none", "secure": False},
        {"samesite": "sometimes"},
        {"cookie_name": "bad name"},
        {"cookie_name": "__Host-sid", "domain": "example.test"},
        {"cookie_name": "__Secure-sid", "secure": False},
        {"path": "app"},
        {"domain": "a;b"},
        {"max_age": 0},
    ):
        with pytest.raises(ValueError):
            SessionMiddleware(noop, store, **options)  # type: ignore[arg-type]


# -- ids from the client are never adopted unless they name a live session -----------------------------------------
@pytest.mark.parametrize("forged", ["../../etc", "x" * 5000, "", "null", "ünïcode", "admin"])
async def test_a_forged_cookie_gives_a_new_empty_session_never_an_error(store: SessionStore, forged: str) -> None:
    app = app_for(store)
    async with client(app) as http:
        cookie = {b"cookie": f"{NAME}={forged}".encode()}
        response = await http.get("/read", headers=cookie)
        assert response.status_code == 200 and response.json() == {"data": {}, "new": True}
        assert set_cookies(response) == []
        written = await http.get("/write", params={"k": "v"}, headers=cookie)
        sid, _ = the_cookie(written)
    assert sid != forged and store.is_valid_id(sid)


async def test_an_attacker_chosen_valid_looking_id_is_never_adopted(store: SessionStore) -> None:
    chosen = store.new_id()  # the right form, but never created by the server
    async with client(app_for(store)) as http:
        http.cookies.set(NAME, chosen, domain="test")
        assert (await http.get("/read")).json() == {"data": {}, "new": True}
        sid, _ = the_cookie(await http.get("/write", params={"role": "victim"}))
        assert sid != chosen
        assert (await http.get("/read")).json() == {"data": {"role": "victim"}, "new": False}
    assert await store.aget(chosen) is None and await store.aget(sid) == {"role": "victim"}


async def test_an_expired_session_gives_a_new_empty_one(cache: Cache) -> None:
    store = SessionStore(cache, ttl=0.3, absolute_ttl=3600)
    async with client(app_for(store)) as http:
        old, _ = the_cookie(await http.get("/write", params={"k": "v"}))
        await asyncio.sleep(0.5)
        expired = await http.get("/read")
        assert expired.status_code == 200 and expired.json() == {"data": {}, "new": True}
        new, _ = the_cookie(await http.get("/write", params={"k2": "v2"}))
    assert new != old and await store.aget(new) == {"k2": "v2"}


async def test_the_first_live_id_among_several_cookies_is_used(store: SessionStore) -> None:
    live = await store.acreate({"who": "me"})
    async with client(app_for(store)) as http:
        both = {"cookie": f"{NAME}=../../etc; other=1; {NAME}={store.new_id()}; {NAME}={live}"}
        assert (await http.get("/read", headers=both)).json() == {"data": {"who": "me"}, "new": False}


# -- login, logout --------------------------------------------------------------------------------------------------
async def test_rotation_at_login_changes_the_cookie_and_kills_the_old_id(store: SessionStore) -> None:
    async with client(app_for(store)) as http:
        before, _ = the_cookie(await http.get("/write", params={"cart": "3 items"}))
        after, attrs = the_cookie(await http.post("/login"))
        assert after != before and store.is_valid_id(after) and "httponly" in attrs
        assert (await http.get("/read")).json() == {"data": {"cart": "3 items", "user_id": 7}, "new": False}
        # The old id is dead, also for whoever had it (session fixation).
        assert await store.aget(before) is None
    async with client(app_for(store)) as thief:
        stolen = await thief.get("/read", headers={"cookie": f"{NAME}={before}"})
        assert stolen.json() == {"data": {}, "new": True}


async def test_login_on_a_new_session_creates_it(store: SessionStore) -> None:
    async with client(app_for(store)) as http:
        sid, _ = the_cookie(await http.post("/login"))
    assert await store.aget(sid) == {"user_id": 7}


async def test_logout_expires_the_cookie_and_destroys_the_entry(store: SessionStore, server_url: str) -> None:
    async with client(app_for(store)) as http:
        sid, _ = the_cookie(await http.get("/write", params={"k": "v"}))
        response = await http.post("/logout")
        value, attrs = the_cookie(response)
        assert value in ("", '""') and attrs["max-age"] == "0" and "1970" in attrs["expires"]
        assert attrs["path"] == "/" and "httponly" in attrs and "secure" in attrs
        assert NAME not in http.cookies
        assert (await http.get("/read")).json() == {"data": {}, "new": True}
    assert await store.aget(sid) is None
    assert namespace_keys(server_url, store.cache.namespace) == []


async def test_a_logout_the_server_missed_is_logged_and_the_cookie_still_expired(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreachable(sid: str) -> bool:
        raise InvalidationError("destroying a session did not reach the server")

    async with client(app_for(store)) as http:
        the_cookie(await http.get("/write", params={"k": "v"}))
        monkeypatch.setattr(store, "adestroy", unreachable)
        with caplog.at_level(logging.ERROR, logger="cachewise.asgi"):
            response = await http.post("/logout")
    assert response.status_code == 200 and the_cookie(response)[1]["max-age"] == "0"
    assert "could not be destroyed" in caplog.text


async def test_a_session_emptied_key_by_key_is_destroyed(store: SessionStore) -> None:
    async with client(app_for(store)) as http:
        sid, _ = the_cookie(await http.get("/write", params={"k": "v"}))
        _, attrs = the_cookie(await http.get("/remove", params={"key": "k"}))
        assert attrs["max-age"] == "0"
    assert await store.aget(sid) is None


# -- write-back -----------------------------------------------------------------------------------------------------
async def test_no_write_back_when_unchanged_and_only_changed_keys_otherwise(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(store, monkeypatch)
    async with client(app_for(store)) as http:
        await http.get("/write", params={"a": "1", "b": "2"})
        assert [name for name, _, _ in spy.writes] == ["acreate"]
        spy.calls.clear()
        for path in ("/read", "/noop", "/read"):
            await http.get(path)
        await http.get("/write", params={"a": "1"})  # the same value again: no change
        assert spy.writes == [] and [name for name, _, _ in spy.calls] == ["aget"] * 4
        await http.get("/write", params={"b": "3"})
        await http.get("/append", params={"item": "5"})  # a list changed in place is seen
        await http.get("/append", params={"item": "6"})
        await http.get("/remove", params={"key": "a"})
        updates = [(args[1:], kwargs) for name, args, kwargs in spy.writes]
        assert [name for name, _, _ in spy.writes] == ["aupdate"] * 4
        assert updates == [
            (({"b": "3"},), {"remove": []}),
            (({"cart": [5]},), {"remove": []}),
            (({"cart": [5, 6]},), {"remove": []}),
            (({},), {"remove": ["a"]}),
        ]
        assert (await http.get("/read")).json()["data"] == {"b": "3", "cart": [5, 6]}


async def test_parallel_requests_changing_different_keys_keep_both(store: SessionStore) -> None:
    RELEASE.update(first=asyncio.Event(), second=asyncio.Event())
    async with client(app_for(store)) as http:
        sid, _ = the_cookie(await http.get("/write", params={"base": "1"}))
        first = asyncio.create_task(http.get("/slow-write", params={"wait": "first", "key": "x", "value": "1"}))
        second = asyncio.create_task(http.get("/slow-write", params={"wait": "second", "key": "y", "value": "2"}))
        await asyncio.sleep(0.05)  # both loaded the session
        RELEASE["first"].set()
        assert (await first).status_code == 200
        RELEASE["second"].set()
        assert (await second).status_code == 200
    assert await store.aget(sid) == {"base": "1", "x": "1", "y": "2"}


async def test_fastapi_request_session(store: SessionStore) -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, cookie_name=NAME)

    @app.get("/visit")
    async def visit(request: Request) -> dict[str, Any]:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"], "same": request.state.session is request.session}

    async with client(app) as http:
        first = await http.get("/visit")
        assert first.json() == {"visits": 1, "same": True} and len(set_cookies(first)) == 1
        second = await http.get("/visit")
        assert second.json() == {"visits": 2, "same": True} and set_cookies(second) == []


async def test_unserialisable_data_is_the_programmers_error(store: SessionStore) -> None:
    async def bad(request: Request) -> Response:
        request.session["obj"] = object()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/bad", bad)], middleware=[Middleware(SessionMiddleware, store=store)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as http:
        assert (await http.get("/bad")).status_code == 500


async def test_other_scopes_pass_through(store: SessionStore) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        assert "session" not in scope

    await SessionMiddleware(app, store)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


async def test_changes_after_the_response_started_are_saved_for_existing_sessions(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first chunk; "
            request.session["streamed"] = True  # the response has started: no cookie can follow
            yield b"done"

        return StreamingResponse(body())

    app = Starlette(
        routes=[*ROUTES, Route("/stream", stream)],
        middleware=[Middleware(SessionMiddleware, store=store, cookie_name=NAME)],
    )
    async with client(app) as http:
        with caplog.at_level(logging.WARNING, logger="cachewise.asgi"):
            assert (await http.get("/stream")).text == "first chunk; done"
        assert "lost" in caplog.text and NAME not in http.cookies  # a new session cannot be created any more
        sid, _ = the_cookie(await http.get("/write", params={"k": "v"}))
        await http.get("/stream")
    assert await store.aget(sid) == {"k": "v", "streamed": True}


async def test_websocket_sees_and_updates_an_existing_session(store: SessionStore) -> None:
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(dict(websocket.session))
        websocket.session["seen_ws"] = True
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", chat)], middleware=[Middleware(SessionMiddleware, store=store, cookie_name=NAME)]
    )
    sid = await store.acreate({"user_id": 7})
    incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "wss",
        "query_string": b"",
        "headers": [(b"cookie", f"{NAME}={sid}".encode())],
        "client": ("1.2.3.4", 1),
        "server": ("test", 443),
        "subprotocols": [],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"user_id":7}'
    assert await store.aget(sid) == {"user_id": 7, "seen_ws": True}


# -- the server is gone ---------------------------------------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    server = EmbeddedServer().start()
    yield server
    server.stop()


async def test_server_down_gives_empty_sessions_never_a_500(
    own_server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(own_server.url, namespace="smw", timeout=2.0, connect_timeout=2.0)
    store = SessionStore(cache, ttl=60)
    async with client(app_for(store)) as http:
        sid, _ = the_cookie(await http.get("/write", params={"k": "v"}))
        own_server.stop()
        with caplog.at_level(logging.WARNING):
            read = await http.get("/read")
            assert read.status_code == 200 and read.json() == {"data": {}, "new": True}
            assert set_cookies(read) == []  # the client keeps its cookie for when the server is back
            assert (await http.get("/write", params={"k": "v2"})).status_code == 200
            assert (await http.post("/login")).status_code == 200
            logout = await http.post("/logout")
            assert logout.status_code == 200
            assert cookie_attrs(set_cookies(logout)[-1])[2]["max-age"] == "0"  # the browser forgets it anyway
    assert sid
    await cache.aclose()
