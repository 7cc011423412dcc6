"""ASGI integration (Starlette, FastAPI, any ASGI server): rate limiting and server-side sessions.

>>> from cachewise.asgi import RateLimitMiddleware, SessionMiddleware, rate_limit, client_ip

Pure ASGI: nothing here imports Starlette; :func:`rate_limit` (a FastAPI dependency) imports FastAPI when called.
"""

from .client import UNIX_PEER, TrustedProxies, client_ip, parse_address
from .ratelimit import SCOPE_KEY, RateLimitMiddleware, RateLimitRecord, format_policy, format_ratelimit, rate_limit
from .sessions import Session, SessionMiddleware

__all__ = [
    "SCOPE_KEY",
    "UNIX_PEER",
    "RateLimitMiddleware",
    "RateLimitRecord",
    "Session",
    "SessionMiddleware",
    "TrustedProxies",
    "client_ip",
    "format_policy",
    "format_ratelimit",
    "parse_address",
    "rate_limit",
]
