"""RateLimitMiddleware and the rate_limit dependency, through real ASGI apps (Starlette and FastAPI, httpx's ASGI
transport, and once a real uvicorn server), on the embedded Valkey and the system Redis; and client_ip, pure."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from cachewise import Cache
from cachewise.asgi import RateLimitMiddleware, TrustedProxies, client_ip, parse_address, rate_limit
from cachewise.asgi.ratelimit import format_policy
from cachewise.ratelimit import Limit, RateLimiter
from cachewise.server.embedded import EmbeddedServer

RATE_RE = re.compile(r'^"(?P<name>[^"]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


# -- helpers --------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
async def not_at_a_window_edge() -> None:
    """Fixed windows are aligned on multiples of the period (60 s here): a test that straddles an edge would see its
    counts start again.  Tests take milliseconds; wait out the last 1.5 s of a minute."""
    into = time.time() % 60
    if into > 58.5:
        await asyncio.sleep(60 - into + 0.05)


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


ROUTES = [
    Route("/", ok),
    Route("/login", ok, methods=["GET", "POST"]),
    Route("/health", ok),
    Route("/static/app.js", ok),
    Route("/api/items", ok),
    Route("/api/items/{item_id}", ok),
]


def starlette_app(**options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(RateLimitMiddleware, **options)])


def client(app: Any, ip: str = "1.2.3.4", scheme: str = "http") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 123)), base_url=f"{scheme}://test")


def rate(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """The RateLimit field as {policy: (remaining, reset seconds)}."""
    value = response.headers.get("ratelimit")
    if value is None:
        return {}
    items: dict[str, tuple[int, int]] = {}
    for item in value.split(", "):
        match = RATE_RE.match(item)
        assert match, f"malformed RateLimit item {item!r}"
        items[match["name"]] = (int(match["r"]), int(match["t"]))
    return items


def remaining(response: httpx.Response, name: str) -> int:
    return rate(response)[name][0]


def fixed(cache: Cache, limit: int, name: str, period: float = 60, **options: Any) -> RateLimiter:
    return RateLimiter(cache, limit=limit, period=period, algorithm="fixed_window", name=name, **options)


# -- client_ip: pure ------------------------------------------------------------------------------------------------
def scope(peer: str | None, *xff: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 5000) if peer is not None else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in xff],
    }


PROXIES = ["10.0.0.0/8", "192.168.1.1", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # No trusted peer: the header is never read, whatever it says.
        ("1.2.3.4", ["6.6.6.6"], "1.2.3.4"),
        ("1.2.3.4", ["10.0.0.1"], "1.2.3.4"),
        ("1.2.3.4", [], "1.2.3.4"),
        # A trusted peer: the rightmost untrusted entry is the client; what the client wrote on the left is ignored.
        ("10.0.0.1", ["5.5.5.5"], "5.5.5.5"),
        ("10.0.0.1", ["6.6.6.6, 5.5.5.5"], "5.5.5.5"),
        ("10.0.0.1", ["6.6.6.6, 5.5.5.5, 10.0.0.7, 192.168.1.1"], "5.5.5.5"),
        ("10.0.0.1", ["6.6.6.6", "5.5.5.5, 10.0.0.9"], "5.5.5.5"),  # several header lines, joined in order
        ("10.0.0.1", ["5.5.5.5:4711"], "5.5.5.5"),
        ("10.0.0.1", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("10.0.0.1", ["::ffff:5.5.5.5"], "5.5.5.5"),
        ("2001:db8::5", ["5.5.5.5"], "5.5.5.5"),
        # Malformed entries are never an identity: the walk stops at the last trusted hop.
        ("10.0.0.1", ["garbage"], "10.0.0.1"),
        ("10.0.0.1", ["5.5.5.5, unknown"], "10.0.0.1"),
        ("10.0.0.1", ["6.6.6.6, not-an-ip, 10.0.0.2"], "10.0.0.2"),
        ("10.0.0.1", ["6.6.6.6, garbage, 5.5.5.5"], "5.5.5.5"),  # garbage left of the client is the client's own
        ("10.0.0.1", ["5.5.5.5, , ,"], "5.5.5.5"),  # blank entries are skipped
        # Every hop trusted: the leftmost.
        ("10.0.0.1", ["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
        ("10.0.0.1", [], "10.0.0.1"),
        # Peers that are not IP addresses.
        (None, ["5.5.5.5"], "unknown"),
        ("testclient", ["5.5.5.5"], "testclient"),
        ("::ffff:1.2.3.4", [], "1.2.3.4"),
    ],
)
def test_client_ip(peer: str | None, xff: list[str], expected: str) -> None:
    assert client_ip(scope(peer, *xff), PROXIES) == expected
    assert client_ip(scope(peer, *xff), TrustedProxies(PROXIES)) == expected


def test_client_ip_without_trusted_proxies_never_reads_the_header() -> None:
    assert client_ip(scope("10.0.0.1", "5.5.5.5")) == "10.0.0.1"
    assert client_ip(scope("127.0.0.1", "5.5.5.5")) == "127.0.0.1"


def test_client_ip_unix_socket_proxy_and_other_header() -> None:
    assert client_ip(scope(None, "5.5.5.5"), ["unix"]) == "5.5.5.5"
    assert client_ip(scope(None, "5.5.5.5"), []) == "unknown"
    real_ip = {"client": ("10.0.0.1", 1), "headers": [(b"x-real-client", b"7.7.7.7")]}
    assert client_ip(real_ip, ["10.0.0.0/8"], header="X-Real-Client") == "7.7.7.7"
    assert client_ip(real_ip, ["10.0.0.0/8"]) == "10.0.0.1"


def test_trusted_proxies_parsing() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", ipaddress.ip_address("192.0.2.1"), ipaddress.ip_network("::1/128")])
    assert ipaddress.ip_address("10.9.9.9") in trusted and ipaddress.ip_address("192.0.2.1") in trusted
    assert ipaddress.ip_address("::1") in trusted and ipaddress.ip_address("11.0.0.1") not in trusted
    assert "10.0.0.1" not in trusted  # only parsed addresses are members
    assert not TrustedProxies() and TrustedProxies("unix")
    with pytest.raises(ValueError, match="neither an IP address nor a CIDR"):
        TrustedProxies(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="neither"):
        TrustedProxies(["proxy.example.com"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("1.2.3.4:x", None),
        ("[::1]x", None),
        ("[::1", None),
        ("fe80::1%eth0", None),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("1.2.3.4.5", None),
        ("9" * 100, None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (None if address is None else str(address)) == expected


# -- limits, headers, 429 -------------------------------------------------------------------------------------------
async def test_429_after_the_limit_with_retry_after_and_ratelimit_headers(cache: Cache) -> None:
    limiter = fixed(cache, 3, "api")
    async with client(starlette_app(limiter=limiter)) as http:
        responses = [await http.get("/") for _ in range(4)]
    for i, response in enumerate(responses[:3]):
        assert response.status_code == 200 and response.text == "ok"
        assert response.headers["ratelimit-policy"] == '"api";q=3;w=60'
        (r, t) = rate(response)["api"]
        assert r == 2 - i and 1 <= t <= 60
    refused = responses[3]
    assert refused.status_code == 429
    assert refused.json() == {"detail": "rate limit exceeded"}
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["ratelimit-policy"] == '"api";q=3;w=60'
    (r, t) = rate(refused)["api"]
    retry_after = int(refused.headers["retry-after"])
    # Fixed windows are aligned on multiples of 60 s: the wait is what is left of this window, for both fields.
    assert r == 0 and 1 <= retry_after <= 60 and t == retry_after
    assert t <= rate(responses[0])["api"][1]
    decision = await limiter.apeek("ip:1.2.3.4")
    assert decision.remaining == 0 and not decision.allowed


async def test_identities_are_separate_and_the_app_keeps_its_own_headers(cache: Cache) -> None:
    async def own(request: Request) -> Response:
        return PlainTextResponse("ok", headers={"x-app": "1", "RateLimit": "forged-by-app"})

    app = Starlette(routes=[Route("/", own)])
    wrapped = RateLimitMiddleware(app, fixed(cache, 1, "api"))  # pure ASGI: wrapping works without Starlette's list
    async with client(wrapped, "1.1.1.1") as a, client(wrapped, "2.2.2.2") as b:
        first_a, first_b = await a.get("/"), await b.get("/")
        assert first_a.status_code == first_b.status_code == 200
        assert first_a.headers["x-app"] == "1"
        assert first_a.headers.get_list("ratelimit") == ['"api";r=0;t=' + str(rate(first_a)["api"][1])]
        assert (await a.get("/")).status_code == 429 and (await b.get("/")).status_code == 429


async def test_token_bucket_and_several_limits_in_one_limiter(cache: Cache) -> None:
    limiter = RateLimiter(cache, limits=[Limit(2, 1), Limit(100, 3600, algorithm="fixed_window")], name="api")
    assert format_policy(limiter) == ['"api-1s";q=2;w=1', '"api-3600s";q=100;w=3600']
    async with client(starlette_app(limiter=limiter)) as http:
        first = await http.get("/")
        assert first.headers["ratelimit-policy"] == '"api-1s";q=2;w=1, "api-3600s";q=100;w=3600'
        assert rate(first) == {"api-1s": (1, 1)}  # the binding limit: the one with the least remaining
        await http.get("/")
        refused = await http.get("/")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert rate(refused)["api-1s"][0] == 0


# -- stacking: one request, counted once per limiter ---------------------------------------------------------------
async def test_route_limit_stacked_on_a_global_limit_counts_each_request_once_in_each(cache: Cache) -> None:
    global_limiter, login = fixed(cache, 10, "api"), fixed(cache, 3, "login")
    app = starlette_app(limiter=global_limiter, routes={"/login": login, "/api/*": login})  # login listed twice
    async with client(app) as http:
        for i in range(3):
            response = await http.post("/login")
            assert response.status_code == 200
            assert rate(response) == {
                "login": (2 - i, rate(response)["login"][1]),
                "api": (9 - i, rate(response)["api"][1]),
            }
            assert response.headers["ratelimit-policy"] == '"login";q=3;w=60, "api";q=10;w=60'
        refused = await http.post("/login")
        assert refused.status_code == 429
        # Refused by the route limit, hit first: the global budget was not touched.
        assert rate(refused) == {"login": (0, rate(refused)["login"][1])}
        home = await http.get("/")
        assert home.status_code == 200 and rate(home) == {"api": (6, rate(home)["api"][1])}
        # "/api/*" uses the same limiter as "/login": one bucket, already empty.
        assert (await http.get("/api/items")).status_code == 429
        assert (await http.get("/login/")).status_code == 429  # a trailing slash does not dodge the route limit
        assert (await http.get("http://test//login")).status_code == 429
    assert (await global_limiter.apeek("ip:1.2.3.4")).remaining == 6
    assert (await login.apeek("ip:1.2.3.4")).remaining == 0


async def test_method_and_prefix_patterns(cache: Cache) -> None:
    post_login, api, get_root = fixed(cache, 1, "post-login"), fixed(cache, 2, "items"), fixed(cache, 1, "root")
    app = starlette_app(routes={"POST /login": post_login, "/api/*": api, "GET /": get_root}, exempt=["OPTIONS /*"])
    async with client(app) as http:
        assert (await http.head("/")).status_code == 200  # HEAD does a GET's work: "GET /" covers it
        assert (await http.get("/")).status_code == 429
        assert (await http.options("/api/items")).status_code == 405  # exempt: never counted, Starlette answers
        assert [(await http.get("/login")).status_code for _ in range(3)] == [200] * 3  # GET is not limited
        assert "ratelimit" not in (await http.get("/login")).headers
        assert (await http.post("/login")).status_code == 200
        assert (await http.post("/login")).status_code == 429
        assert (await http.get("/api/items")).status_code == 200
        assert (await http.get("/api/items/7")).status_code == 200
        assert (await http.get("/api/items")).status_code == 429


def test_bad_patterns_are_refused_at_once(cache: Cache) -> None:
    for bad in ("login", "/a*b", "/api*", "/*/x"):
        with pytest.raises(ValueError, match="route pattern"):
            RateLimitMiddleware(Starlette(), routes={bad: fixed(cache, 1, "x")})
    with pytest.raises(ValueError, match="needs a limiter"):
        RateLimitMiddleware(Starlette())


async def test_nested_middlewares_and_a_mounted_app_count_once(cache: Cache) -> None:
    limiter, inner_only = fixed(cache, 5, "api"), fixed(cache, 5, "inner")
    # The same limiter twice (outer and inner middleware), and a second object for the same keys: one bucket.
    twin = fixed(cache, 5, "api")
    inner = Starlette(
        routes=[Route("/x", ok)],
        middleware=[Middleware(RateLimitMiddleware, limiter=twin, routes={"/x": inner_only})],
    )
    app = Starlette(
        routes=[Mount("/sub", app=inner)],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter)],
    )
    async with client(app) as http:
        response = await http.get("/sub/x")
    assert response.status_code == 200
    assert rate(response) == {"api": (4, rate(response)["api"][1]), "inner": (4, rate(response)["inner"][1])}
    assert response.headers.get_list("ratelimit-policy") == ['"api";q=5;w=60, "inner";q=5;w=60']
    assert (await limiter.apeek("ip:1.2.3.4")).remaining == 4


# -- exempt paths ---------------------------------------------------------------------------------------------------
async def test_exempt_paths_are_never_counted(cache: Cache) -> None:
    limiter = fixed(cache, 2, "api")
    app = starlette_app(limiter=limiter, exempt=["/health", "/static/*"])
    async with client(app) as http:
        for _ in range(10):
            for path in ("/health", "/health/", "/static/app.js"):
                response = await http.get(path)
                assert response.status_code in (200, 307)  # Starlette redirects "/health/" to "/health"
                assert "ratelimit" not in response.headers and "ratelimit-policy" not in response.headers
        home = await http.get("/")
    assert home.status_code == 200 and remaining(home, "api") == 1


async def test_a_key_function_returning_none_is_not_limited(cache: Cache) -> None:
    def by_api_key(scope: Any) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                return "key:" + bytes(value).decode()
        return None

    app = starlette_app(limiter=fixed(cache, 1, "api"), key=by_api_key)
    async with client(app) as http:
        assert [(await http.get("/")).status_code for _ in range(3)] == [200, 200, 200]
        assert (await http.get("/", headers={"x-api-key": "a"})).status_code == 200
        assert (await http.get("/", headers={"x-api-key": "a"})).status_code == 429
        assert (await http.get("/", headers={"x-api-key": "b"})).status_code == 200


# -- trusted proxies ------------------------------------------------------------------------------------------------
async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(cache: Cache) -> None:
    limiter = fixed(cache, 3, "api")
    app = starlette_app(limiter=limiter, trusted_proxies=["10.0.0.0/8"])
    async with client(app, "1.2.3.4") as http:
        codes = [(await http.get("/", headers={"X-Forwarded-For": f"5.5.5.{i}"})).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # every spoofed value shared the peer's bucket
    assert (await limiter.apeek("ip:1.2.3.4")).remaining == 0
    assert (await limiter.apeek("ip:5.5.5.0")).remaining == 3


async def test_behind_a_trusted_proxy_each_real_client_has_its_own_bucket(cache: Cache) -> None:
    limiter = fixed(cache, 2, "api")
    app = starlette_app(limiter=limiter, trusted_proxies=["10.0.0.0/8"])
    async with client(app, "10.0.0.1") as proxy:
        for _ in range(2):
            for real in ("5.5.5.1", "5.5.5.2"):
                assert (await proxy.get("/", headers={"X-Forwarded-For": real})).status_code == 200
        assert (await proxy.get("/", headers={"X-Forwarded-For": "5.5.5.1"})).status_code == 429
        # A client that writes its own X-Forwarded-For through the proxy: the proxy appends the real address.
        spoof = await proxy.get("/", headers={"X-Forwarded-For": "9.9.9.9, 5.5.5.1"})
        assert spoof.status_code == 429
        assert (await proxy.get("/", headers={"X-Forwarded-For": "5.5.5.3"})).status_code == 200
    assert (await limiter.apeek("ip:9.9.9.9")).remaining == 2
    assert (await limiter.apeek("ip:10.0.0.1")).remaining == 2  # the proxy itself was never counted


# -- the FastAPI dependency ------------------------------------------------------------------------------------------
async def test_fastapi_dependency_for_one_route(cache: Cache) -> None:
    limiter = fixed(cache, 2, "search")
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(rate_limit(limiter))])
    async def search() -> dict[str, str]:
        return {"result": "x"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"result": "y"}

    async with client(app) as http:
        first = await http.get("/search")
        assert first.status_code == 200 and first.json() == {"result": "x"}
        assert first.headers["ratelimit-policy"] == '"search";q=2;w=60' and remaining(first, "search") == 1
        assert (await http.get("/search")).status_code == 200
        refused = await http.get("/search")
        assert refused.status_code == 429 and refused.json() == {"detail": "rate limit exceeded"}
        assert 1 <= int(refused.headers["retry-after"]) <= 60 and remaining(refused, "search") == 0
        assert [(await http.get("/free")).status_code for _ in range(5)] == [200] * 5
        assert "ratelimit" not in (await http.get("/free")).headers


async def test_fastapi_dependency_and_middleware_never_count_a_request_twice(cache: Cache) -> None:
    shared, route = fixed(cache, 5, "api"), fixed(cache, 2, "report")
    app = FastAPI()
    app.add_middleware(RateLimitMiddleware, limiter=shared)

    # The middleware's limiter again as a dependency (fastapi-limiter #40 counted this twice), plus a route limiter.
    @app.get("/report", dependencies=[Depends(rate_limit(shared)), Depends(rate_limit(route))])
    async def report() -> Response:
        return PlainTextResponse("report")  # a Response returned directly still gets the fields

    async with client(app) as http:
        first = await http.get("/report")
        assert first.status_code == 200 and first.text == "report"
        assert rate(first) == {"api": (4, rate(first)["api"][1]), "report": (1, rate(first)["report"][1])}
        assert first.headers.get_list("ratelimit-policy") == ['"api";q=5;w=60, "report";q=2;w=60']
        assert (await http.get("/report")).status_code == 200
        refused = await http.get("/report")
        assert refused.status_code == 429 and refused.json() == {"detail": "rate limit exceeded"}
        assert rate(refused) == {"api": (2, rate(refused)["api"][1]), "report": (0, rate(refused)["report"][1])}
        assert len(refused.headers.get_list("ratelimit")) == 1 and "retry-after" in refused.headers
    assert (await shared.apeek("ip:1.2.3.4")).remaining == 2  # three requests, three units
    assert (await route.apeek("ip:1.2.3.4")).remaining == 0


async def test_fastapi_dependency_honours_trusted_proxies(cache: Cache) -> None:
    limiter = fixed(cache, 1, "dep")
    app = FastAPI()

    @app.get("/", dependencies=[Depends(rate_limit(limiter, trusted_proxies=["10.0.0.0/8"]))])
    async def index() -> dict[str, int]:
        return {"ok": 1}

    async with client(app, "10.0.0.1") as proxy, client(app, "1.2.3.4") as direct:
        assert (await proxy.get("/", headers={"X-Forwarded-For": "5.5.5.1"})).status_code == 200
        assert (await proxy.get("/", headers={"X-Forwarded-For": "5.5.5.2"})).status_code == 200
        assert (await direct.get("/", headers={"X-Forwarded-For": "5.5.5.3"})).status_code == 200
        assert (await direct.get("/", headers={"X-Forwarded-For": "5.5.5.4"})).status_code == 429


# -- server down ----------------------------------------------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    server = EmbeddedServer().start()
    yield server
    server.stop()


async def test_server_down_allow_lets_requests_through_without_made_up_headers(own_server: EmbeddedServer) -> None:
    cache = Cache(own_server.url, namespace="rlmw", timeout=2.0, connect_timeout=2.0)
    limiter = fixed(cache, 2, "api", on_error="allow")
    app = starlette_app(limiter=limiter)
    async with client(app) as http:
        assert remaining(await http.get("/"), "api") == 1
        own_server.stop()
        responses = [await http.get("/") for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert all("ratelimit" not in r.headers and "ratelimit-policy" not in r.headers for r in responses)
    await cache.aclose()


async def test_server_down_deny_answers_503_not_429(own_server: EmbeddedServer) -> None:
    cache = Cache(own_server.url, namespace="rlmw", timeout=2.0, connect_timeout=2.0)
    login = fixed(cache, 5, "login", on_error="deny")
    app = FastAPI()

    @app.post("/login", dependencies=[Depends(rate_limit(login))])
    async def do_login() -> dict[str, bool]:
        return {"ok": True}

    middleware_app = starlette_app(limiter=login)
    async with client(app) as http, client(middleware_app) as mw:
        assert (await http.post("/login")).status_code == 200
        own_server.stop()
        for target in (http, mw):
            response = await target.post("/login")
            assert response.status_code == 503
            assert response.json() == {"detail": "rate limiter unavailable"}
            assert int(response.headers["retry-after"]) >= 1 and "ratelimit" not in response.headers
    await cache.aclose()


async def test_a_limiter_that_raises_follows_its_on_error(cache: Cache, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(RateLimiter):
        async def ahit(self, identity: str, cost: int = 1) -> Any:
            raise RuntimeError("boom")

    app = starlette_app(limiter=Broken(cache, limit=1, period=60, name="broken"))
    async with client(app) as http:
        assert [(await http.get("/")).status_code for _ in range(3)] == [200, 200, 200]
    assert "boom" in caplog.text


async def test_websocket_and_lifespan_scopes_pass_through(cache: Cache) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = RateLimitMiddleware(app, fixed(cache, 1, "api"))
    for kind in ("lifespan", "websocket", "websocket"):
        await middleware({"type": kind, "path": "/", "client": ("1.2.3.4", 1), "headers": []}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket", "websocket"]


# -- a real server --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    import uvicorn

    port = _free_port()
    # proxy_headers=False: uvicorn's own X-Forwarded-For handling (on by default, trusting 127.0.0.1) would rewrite
    # scope["client"] before any middleware sees it; the middleware's trusted_proxies must be the only judge.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_through_a_real_uvicorn_server(cache: Cache) -> None:
    limiter = fixed(cache, 2, "api")
    app = starlette_app(limiter=limiter, trusted_proxies=["10.0.0.0/8"])
    async with running(app) as url, httpx.AsyncClient(base_url=url) as http:
        # The peer is 127.0.0.1, not trusted: the forged header is ignored.
        codes = [(await http.get("/", headers={"X-Forwarded-For": f"5.5.5.{i}"})).status_code for i in range(3)]
        refused = await http.get("/")
    assert codes == [200, 200, 429]
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert refused.headers["ratelimit-policy"] == '"api";q=2;w=60'
    assert (await limiter.apeek("ip:127.0.0.1")).remaining == 0
