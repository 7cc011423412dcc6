"""cachewise: caching with Redis-compatible servers, done right.

>>> from cachewise import Cache
>>> cache = Cache()                       # CACHEWISE_URL, else a private embedded Valkey
>>> cache.set("product:42", {"id": 42}, ttl=300)
"""

from .cache import MISSING, Cache
from .decorator import AsyncCachedFunction, CachedFunction
from .engine.stampede import Protection
from .errors import (
    CachewiseError,
    ConfigurationError,
    EmbeddedServerError,
    InvalidationError,
    InvalidKeyError,
    InvalidTTLError,
    KeyTemplateError,
    SerializationError,
    ServerNotFoundError,
    SessionDataError,
    TTLRequiredError,
)
from .features import FeatureStore, MaterializeSummary
from .local import LocalCache, LocalStats
from .query import QueryCache
from .ratelimit import Decision, Limit, RateLimiter
from .serializers import JsonSerializer, MsgpackSerializer, Serializer
from .server.embedded import EmbeddedServer
from .sessions import SessionStore
from .stats import CacheStats, Counters
from .ttl import AlignedTTL, until_next

__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "AlignedTTL",
    "AsyncCachedFunction",
    "Cache",
    "CacheStats",
    "CachedFunction",
    "CachewiseError",
    "ConfigurationError",
    "Counters",
    "Decision",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FeatureStore",
    "InvalidKeyError",
    "InvalidTTLError",
    "InvalidationError",
    "JsonSerializer",
    "KeyTemplateError",
    "Limit",
    "LocalCache",
    "LocalStats",
    "MaterializeSummary",
    "MsgpackSerializer",
    "Protection",
    "QueryCache",
    "RateLimiter",
    "SerializationError",
    "Serializer",
    "ServerNotFoundError",
    "SessionDataError",
    "SessionStore",
    "TTLRequiredError",
    "__version__",
    "until_next",
]
