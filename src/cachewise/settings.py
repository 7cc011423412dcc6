"""A :class:`~cachewise.Cache`'s constructor arguments, checked before anything starts (no I/O).

Every argument is validated here, with a message that names it and says what to pass, before a connection opens
or an embedded server starts: a mistake never leaves a server process behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .engine.stampede import DEFAULT, Protection
from .errors import ConfigurationError
from .keyspace import KeySpace
from .serializers import Serializer, get_serializer
from .signing import Signer
from .transport.connection import ClientOptions
from .ttl import TTLLike, check_jitter, resolve_ttl_ms

__all__ = ["CacheSettings"]


@dataclass(frozen=True)
class CacheSettings:
    """The validated settings of one cache (see :class:`~cachewise.Cache` for what each means)."""

    url: str | None = None
    namespace: str = "cachewise"
    default_ttl: TTLLike | None = None
    jitter: float = 0.0
    serializer: str | Serializer | None = None
    protection: Protection = DEFAULT
    timeout: float = 0.5
    connect_timeout: float = 0.5
    pool_timeout: float = 2.0
    max_connections: int = 64
    breaker_threshold: int = 5
    breaker_reset: float = 1.0
    max_value_bytes: int | None = 1 << 20
    signing_key: str | bytes | None = None
    client_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        KeySpace(self.namespace)  # raises for a namespace that cannot prefix keys
        if self.max_value_bytes is not None and (isinstance(self.max_value_bytes, bool) or self.max_value_bytes < 1):
            raise ConfigurationError("max_value_bytes must be None (no limit) or a positive number of bytes")
        check_jitter(self.jitter)
        if self.default_ttl is not None:
            resolve_ttl_ms(self.default_ttl, None, where="default_ttl")  # validate now, not at the first write
        if not isinstance(self.protection, Protection):
            raise ConfigurationError("protection= takes a cachewise.Protection(...)")
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.pool_timeout <= 0 or self.max_connections < 1:
            raise ConfigurationError("timeouts must be > 0 s and max_connections >= 1")
        self.make_serializer()
        self.make_signer()

    def make_serializer(self) -> Serializer:
        return get_serializer(self.serializer, signed=self.signing_key is not None)

    def make_signer(self) -> Signer | None:
        return Signer(self.signing_key) if self.signing_key is not None else None

    def client(self) -> ClientOptions:
        """How the cache's connections talk to the server."""
        return ClientOptions(
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            pool_timeout=self.pool_timeout,
            max_connections=self.max_connections,
            breaker_threshold=self.breaker_threshold,
            breaker_reset=self.breaker_reset,
            extra=tuple((self.client_options or {}).items()),
        )
