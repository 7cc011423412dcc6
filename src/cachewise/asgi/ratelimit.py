"""Rate limiting for ASGI applications (Starlette, FastAPI, anything ASGI): a pure ASGI middleware and a FastAPI
dependency, on :class:`cachewise.ratelimit.RateLimiter`.

Who is counted
    The key function receives the ASGI scope and returns the identity to count (or None: this request is not
    limited).  The default is the client IP (``"ip:<address>"``) from :func:`cachewise.asgi.client.client_ip`:
    ``X-Forwarded-For`` is read only when the peer is one of ``trusted_proxies``, right to left, so a header forged by
    a client that talks to the application directly is ignored.

Which limiters apply
    The global ``limiter`` applies to every HTTP request that is not exempt; ``routes`` adds limiters for some paths.  A
    route pattern is ``"/path"`` (that exact path), ``"/prefix/*"`` (``/prefix`` and everything under it) or ``"/*"``
    (everything), optionally preceded by an HTTP method (``"POST /login"``; ``"GET ..."`` covers ``HEAD`` too;
    ``exempt=["OPTIONS /*"]`` leaves CORS preflights alone).  *Every* matching pattern applies.  Paths are compared
    after collapsing repeated slashes and dropping a trailing slash, so ``/login/`` and ``//login`` cannot dodge a
    ``/login`` limit.  Patterns match the path the application's routes see: ``scope["path"]`` without the
    ``root_path`` (so a middleware inside a mounted app, or behind ``--root-path``, uses the paths its routes are
    declared with).  ``exempt`` takes the same patterns: an exempt request is never counted and gets no headers.

One request is counted once per limiter, never twice (fastapi-limiter #40)
    The limiters of a request are deduplicated (the same limiter listed twice, or two limiter objects that count in the
    same server keys -- same namespace, name and limits -- are one limiter).  The request is marked in its scope
    (``scope["cachewise.ratelimit"]``), so a nested ``RateLimitMiddleware`` or the :func:`rate_limit` dependency skips
    every limiter that already counted it.  Limiters are hit one after another, **most specific first** (exact route,
    then longer prefixes, then shorter, then the global limiter), and the walk stops at the first refusal: a request
    refused by a route limit costs the global budget nothing.  A request that passes a route limit but is refused by the
    global one has used one unit of the route's budget -- the price of keeping each limiter one atomic server call (a
    cross-limiter transaction would need all limiters on one server and slot).  Within one :class:`RateLimiter` with
    several limits, the limiter itself checks them all before consuming any.

Responses
    Refused: ``429 Too Many Requests``, JSON body ``{"detail": "rate limit exceeded"}``, ``Retry-After`` (whole
    seconds, rounded up, at least 1) and the rate-limit fields.  Allowed: the application's response plus the
    fields.  The fields follow draft-ietf-httpapi-ratelimit-headers-10::

        RateLimit-Policy: "api";q=100;w=60, "login";q=5;w=60
        RateLimit: "api";r=42;t=17, "login";r=4;t=51

    ``RateLimit-Policy`` lists every limit of every limiter that counted the request (``q`` = limit, ``w`` = period
    in seconds); ``RateLimit`` has one item per limiter, for the limit that binds (``r`` = remaining,
    ``t`` = seconds until it resets, rounded up).  A limiter with one limit is named by its ``name`` (the global one
    by ``policy_name`` when given); a limiter with several limits names them ``"<name>-<period>s"``.

When the server is down
    The :class:`RateLimiter` decides (``on_error``): with ``"allow"`` the request goes through, and the degraded
    limiter adds no rate-limit fields (its numbers would be invented); with ``"deny"`` the answer is
    ``503 Service Unavailable`` with ``Retry-After`` and ``{"detail": "rate limiter unavailable"}`` -- not 429, because
    the client did nothing wrong and must not be told it exceeded a quota.  A limiter that raises instead of
    deciding is treated the same way, by its ``on_error`` (default allow), and logged: never a 500.

Only ``http`` scopes are limited; websocket and lifespan scopes pass through.

Behind a proxy, mind the server too: uvicorn rewrites ``scope["client"]`` from ``X-Forwarded-For`` by itself
(``--proxy-headers``, on by default, trusting ``--forwarded-allow-ips``, default 127.0.0.1) before any middleware
runs.  Either let uvicorn do it (and leave ``trusted_proxies`` empty) or run it with ``--no-proxy-headers`` and give
the proxies here -- not both with different lists.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import orjson

from ..errors import ConfigurationError, InvalidKeyError
from ..ratelimit import Decision, Limit, RateLimiter
from .client import ProxySpec, TrustedProxies, client_ip
from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SCOPE_KEY",
    "RateLimitMiddleware",
    "RateLimitRecord",
    "format_policy",
    "format_ratelimit",
    "rate_limit",
]

log = logging.getLogger("cachewise.asgi")

KeyFunc = Callable[[Scope], "str | None"]

#: The scope key under which a request's rate-limit record lives.
SCOPE_KEY = "cachewise.ratelimit"
_POLICY = b"ratelimit-policy"
_STATE = b"ratelimit"
_RATE_HEADERS = (_POLICY, _STATE)
EXCEEDED = "rate limit exceeded"
UNAVAILABLE = "rate limiter unavailable"


# -- header fields --------------------------------------------------------------------------------------------------
def _sf_string(name: str) -> str:
    """``name`` as a Structured Field String (RFC 8941): printable ASCII, quotes and backslashes escaped."""
    cleaned = "".join(ch if " " <= ch <= "~" else "_" for ch in name) or "default"
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _whole_seconds(value: float) -> int:
    """Seconds rounded up, never negative (a header must not promise a reset sooner than it happens)."""
    return max(0, math.ceil(value - 1e-9))


def _policy_names(limiter: RateLimiter, name: str) -> list[str]:
    """The policy name of each of ``limiter``'s limits."""
    limits = limiter.limits
    if len(limits) == 1:
        return [name]
    names: list[str] = []
    for index, limit in enumerate(limits):
        candidate = f"{name}-{_whole_seconds(_seconds(limit.period))}s"
        names.append(candidate if candidate not in names else f"{candidate}-{index}")
    return names


def _binding_index(limiter: RateLimiter, policy: Limit) -> int:
    limits = limiter.limits
    for index, limit in enumerate(limits):
        if limit is policy:
            return index
    for index, limit in enumerate(limits):
        if limit == policy:
            return index
    return 0


def format_policy(limiter: RateLimiter, name: str | None = None) -> list[str]:
    """The ``RateLimit-Policy`` items of ``limiter``: ``"<name>";q=<limit>;w=<period s>`` per limit."""
    names = _policy_names(limiter, name or limiter.name)
    return [
        f"{_sf_string(n)};q={int(limit.limit)};w={max(1, _whole_seconds(_seconds(limit.period)))}"
        for n, limit in zip(names, limiter.limits)
    ]


def format_ratelimit(limiter: RateLimiter, decision: Decision, name: str | None = None) -> str:
    """The ``RateLimit`` item of one decision: ``"<policy>";r=<remaining>;t=<reset s>``."""
    names = _policy_names(limiter, name or limiter.name)
    policy = names[_binding_index(limiter, decision.policy)]
    remaining = max(0, int(decision.remaining)) if decision.allowed else 0
    return f"{_sf_string(policy)};r={remaining};t={_whole_seconds(decision.reset_after)}"


def _retry_after(decision: Decision) -> int:
    return max(1, math.ceil(decision.retry_after - 1e-9))


# -- the per-request record -----------------------------------------------------------------------------------------
def _bucket(limiter: RateLimiter) -> tuple[str, ...]:
    """What identifies a limiter's counters: its server key prefixes (namespace, name and limits), so that two
    limiter objects that count in the same keys are one limiter here."""
    return tuple(limiter.keys(""))


@dataclass
class _Applied:
    limiter: RateLimiter
    decision: Decision
    name: str


@dataclass
class RateLimitRecord:
    """What rate limiting did to one request; lives in ``scope[SCOPE_KEY]``.

    ``writes_headers``: an outer middleware will put the rate-limit fields of every entry on the response.
    """

    applied: list[_Applied] = field(default_factory=list)
    buckets: set[tuple[str, ...]] = field(default_factory=set)
    writes_headers: bool = False

    @classmethod
    def of(cls, scope: Scope) -> RateLimitRecord:
        record = scope.get(SCOPE_KEY)
        if not isinstance(record, RateLimitRecord):
            record = cls()
            scope[SCOPE_KEY] = record
        return record

    def counted(self, limiter: RateLimiter) -> bool:
        return _bucket(limiter) in self.buckets

    def add(self, limiter: RateLimiter, decision: Decision, name: str) -> None:
        self.buckets.add(_bucket(limiter))
        self.applied.append(_Applied(limiter, decision, name))

    @property
    def decisions(self) -> list[Decision]:
        return [entry.decision for entry in self.applied]

    def header_values(self) -> list[tuple[bytes, bytes]]:
        """``RateLimit-Policy`` and ``RateLimit`` of every limiter that counted the request (not the degraded ones)."""
        policies: list[str] = []
        states: list[str] = []
        for entry in self.applied:
            if entry.decision.degraded:
                continue
            policies.extend(format_policy(entry.limiter, entry.name))
            states.append(format_ratelimit(entry.limiter, entry.decision, entry.name))
        if not states:
            return []
        return [(_POLICY, ", ".join(policies).encode("latin-1")), (_STATE, ", ".join(states).encode("latin-1"))]


async def _decide(limiter: RateLimiter, identity: str) -> Decision:
    """``limiter.ahit(identity)``.  The limiter fails open or closed by itself when the server is down; anything
    else it raises (but misuse) is treated the same way, by its ``on_error``, rather than becoming a 500."""
    try:
        return await limiter.ahit(identity)
    except (ConfigurationError, InvalidKeyError):
        raise  # misuse (an identity that is not a str...): loud, as everywhere in cachewise
    except Exception as exc:
        on_error = getattr(limiter, "on_error", "allow")
        action = "refusing" if on_error == "deny" else "allowing"
        log.warning("rate limiter %r failed (%s: %s); %s the request", limiter.name, type(exc).__name__, exc, action)
        policy = limiter.limits[0]
        allowed = on_error != "deny"
        return Decision(
            allowed=allowed,
            limit=int(policy.limit),
            remaining=int(policy.limit) if allowed else 0,
            retry_after=0.0 if allowed else 1.0,
            reset_after=0.0,
            policy=policy,
            degraded=True,
        )


def _refusal(record: RateLimitRecord, decision: Decision) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of the response that refuses a request."""
    status, detail = (503, UNAVAILABLE) if decision.degraded else (429, EXCEEDED)
    body = orjson.dumps({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(_retry_after(decision)).encode()),
        (b"cache-control", b"no-store"),
        *record.header_values(),
    ]
    return status, headers, body


def _with_rate_headers(message: Message, record: RateLimitRecord) -> Message:
    """``message`` (an ``http.response.start``) with the record's fields replacing any already there."""
    values = record.header_values()
    if not values:
        return message
    headers = [(k, v) for k, v in message.get("headers", ()) if bytes(k).lower() not in _RATE_HEADERS]
    headers.extend(values)
    message["headers"] = headers
    return message


# -- route patterns -------------------------------------------------------------------------------------------------
_SLASHES = re.compile(r"/{2,}")


def route_path(scope: Scope) -> str:
    """The path that the application's routes see: ``scope["path"]`` without the ``root_path`` it is mounted at
    (what Starlette's router matches)."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _normalise(path: str) -> str:
    path = _SLASHES.sub("/", path or "/")
    if not path.startswith("/"):
        path = "/" + path
    return path.rstrip("/") or "/"


@dataclass(frozen=True)
class _Pattern:
    method: str | None
    path: str  # normalised; for a prefix pattern, the prefix without "/*"
    prefix: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        spec = text.strip()
        method: str | None = None
        if " " in spec:
            method, _, spec = spec.partition(" ")
            method = method.upper()
            spec = spec.strip()
        if spec in ("*", "/*"):
            return cls(method, "/", True, text)
        if not spec.startswith("/"):
            raise ValueError(f"route pattern {text!r} must start with '/' (optionally after a method: 'POST /login')")
        if spec.endswith("*"):
            base = spec[:-1]
            if not base.endswith("/") or "*" in base:
                raise ValueError(f"route pattern {text!r}: a wildcard is only allowed as a final '/*'")
            return cls(method, _normalise(base), True, text)
        if "*" in spec:
            raise ValueError(f"route pattern {text!r}: a wildcard is only allowed as a final '/*'")
        return cls(method, _normalise(spec), False, text)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method and not (self.method == "GET" and method == "HEAD"):
            return False  # (a GET route also answers HEAD, doing the same work: "GET /x" covers both)
        if not self.prefix:
            return path == self.path
        return self.path == "/" or path == self.path or path.startswith(self.path + "/")

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key, most specific first: exact paths, then longer prefixes; a method beats no method."""
        return (0 if not self.prefix else 1, -len(self.path), 0 if self.method else 1)


def _patterns(items: Iterable[str]) -> tuple[_Pattern, ...]:
    if isinstance(items, str):
        items = [items]
    return tuple(_Pattern.parse(item) for item in items)


def _default_key(trusted: TrustedProxies) -> KeyFunc:
    def key(scope: Scope) -> str:
        return "ip:" + client_ip(scope, trusted)

    return key


# -- the middleware -------------------------------------------------------------------------------------------------
class RateLimitMiddleware:
    """Pure ASGI rate limiting (see the module docstring for the rules).

    ``limiter``: applies to every non-exempt HTTP request (may be None when only ``routes`` are limited).
    ``routes``: pattern → limiter, added on top of the global limiter.  ``key``: scope → identity (None: not
    limited); default: the client IP, honouring ``X-Forwarded-For`` only from ``trusted_proxies``.  ``exempt``:
    patterns never counted.  ``policy_name``: the global limiter's name in the headers (default: its ``name``).

    >>> app = RateLimitMiddleware(app, RateLimiter(cache, limit=100, period=60, name="api"),
    ...                           routes={"POST /login": RateLimiter(cache, limit=5, period=60, name="login")},
    ...                           trusted_proxies=["10.0.0.0/8"], exempt=["/health", "/static/*"])
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter | None = None,
        *,
        routes: Mapping[str, RateLimiter] | None = None,
        key: KeyFunc | None = None,
        trusted_proxies: Sequence[ProxySpec] | TrustedProxies = (),
        exempt: Iterable[str] = (),
        policy_name: str | None = None,
    ) -> None:
        if limiter is None and not routes:
            raise ValueError("RateLimitMiddleware needs a limiter, routes={pattern: limiter}, or both")
        self.app = app
        self.limiter = limiter
        self.trusted_proxies = TrustedProxies.of(trusted_proxies)
        if key is not None and self.trusted_proxies:
            log.debug("RateLimitMiddleware: trusted_proxies only affect the default key function")
        self.key: KeyFunc = key if key is not None else _default_key(self.trusted_proxies)
        self.exempt = _patterns(exempt)
        routed = sorted(((_Pattern.parse(p), lim) for p, lim in (routes or {}).items()), key=lambda r: r[0].specificity)
        self.routes: tuple[tuple[_Pattern, RateLimiter], ...] = tuple(routed)
        self.policy_name = policy_name

    def limiters_for(self, method: str, path: str) -> list[tuple[RateLimiter, str]]:
        """The (limiter, policy name) pairs that apply to a request, in the order they are hit; [] when exempt."""
        path = _normalise(path)
        method = method.upper()
        if any(p.matches(method, path) for p in self.exempt):
            return []
        chosen: list[tuple[RateLimiter, str]] = []
        seen: set[tuple[str, ...]] = set()
        candidates = [(lim, lim.name) for pattern, lim in self.routes if pattern.matches(method, path)]
        if self.limiter is not None:
            candidates.append((self.limiter, self.policy_name or self.limiter.name))
        for limiter, name in candidates:
            bucket = _bucket(limiter)
            if bucket not in seen:
                seen.add(bucket)
                chosen.append((limiter, name))
        return chosen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limiters = self.limiters_for(scope.get("method", "GET"), route_path(scope))
        identity = self.key(scope) if limiters else None
        if identity is None:
            await self.app(scope, receive, send)
            return
        outermost = not isinstance(scope.get(SCOPE_KEY), RateLimitRecord)
        record = RateLimitRecord.of(scope)
        for limiter, name in limiters:
            if record.counted(limiter):
                continue
            decision = await _decide(limiter, identity)
            record.add(limiter, decision, name)
            if not decision.allowed:
                await self._refuse(record, decision, send)
                return
        if not outermost or record.writes_headers:
            await self.app(scope, receive, send)
            return
        record.writes_headers = True

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = _with_rate_headers(message, record)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(record: RateLimitRecord, decision: Decision, send: Send) -> None:
        status, headers, body = _refusal(record, decision)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# -- the FastAPI dependency -----------------------------------------------------------------------------------------
def rate_limit(
    limiter: RateLimiter,
    *,
    key: KeyFunc | None = None,
    trusted_proxies: Sequence[ProxySpec] | TrustedProxies = (),
    policy_name: str | None = None,
) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that rate-limits one route: ``@app.get("/x", dependencies=[Depends(rate_limit(lim))])``.

    Refused: ``HTTPException(429)`` with ``Retry-After`` and the rate-limit fields (503 when the limiter is down and
    denies, as in the middleware).  Allowed: the fields are added to the response.  A request that a
    :class:`RateLimitMiddleware` (or another dependency) already counted for this limiter is not counted again.
    """
    from fastapi import HTTPException, Request, Response  # lazily: cachewise does not require FastAPI

    trusted = TrustedProxies.of(trusted_proxies)
    key_func = key if key is not None else _default_key(trusted)
    name = policy_name or limiter.name

    async def dependency(request: Request, response: Response) -> None:
        scope = request.scope
        record = RateLimitRecord.of(scope)
        if record.counted(limiter):
            return
        identity = key_func(scope)
        if identity is None:
            return
        decision = await _decide(limiter, identity)
        record.add(limiter, decision, name)
        if not decision.allowed:
            status, headers, body = _refusal(record, decision)
            extra = {k.decode(): v.decode() for k, v in headers if k not in (b"content-type", b"content-length")}
            raise HTTPException(status_code=status, detail=orjson.loads(body)["detail"], headers=extra)
        if not record.writes_headers:
            for header, value in record.header_values():
                response.headers[header.decode()] = value.decode()

    # FastAPI reads the signature; give it the real classes (this module's annotations are strings).
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("response", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Response),
        ],
        return_annotation=None,
    )
    return dependency
