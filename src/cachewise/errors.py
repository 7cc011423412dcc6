"""The exceptions cachewise raises.

Only misuse by the programmer raises (no TTL, a value that cannot be stored, a key template that names an
argument the function does not have) and failed invalidations, which must never pass silently.  A server that is
down, slow or full never raises from a read or a write: the cache fails open and counts the error.

Every message says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "CachewiseError",
    "ConfigurationError",
    "EmbeddedServerError",
    "InvalidKeyError",
    "InvalidTTLError",
    "InvalidationError",
    "KeyTemplateError",
    "SerializationError",
    "ServerNotFoundError",
    "SessionDataError",
    "TTLRequiredError",
]


class CachewiseError(Exception):
    """Base class of every exception raised by cachewise."""


class ConfigurationError(CachewiseError, ValueError):
    """A constructor argument or URL is not usable (unknown scheme, bad namespace, ...)."""


class TTLRequiredError(CachewiseError, ValueError):
    """A write had no TTL: neither ``ttl=`` on the call nor ``default_ttl=`` on the :class:`Cache`."""


class InvalidTTLError(CachewiseError, ValueError):
    """A TTL is zero, negative, not a number, or absurdly long."""


class InvalidKeyError(CachewiseError, ValueError):
    """A key is empty, not a string, or lies in the part of the keyspace cachewise keeps for itself."""


class KeyTemplateError(CachewiseError, ValueError):
    """A key template or tag template names an argument the function does not have, or an argument has no
    stable text form to build a key from."""


class SerializationError(CachewiseError, TypeError):
    """A value cannot be encoded by the cache's serializer."""


class InvalidationError(CachewiseError):
    """A delete, version bump or tag invalidation did not reach the server.

    The cache may keep serving the old value until its TTL ends; retry the invalidation or lower the TTL.
    """


class ServerNotFoundError(CachewiseError, RuntimeError):
    """No ``valkey-server`` binary could be found to start the embedded server."""


class EmbeddedServerError(CachewiseError, RuntimeError):
    """The embedded server did not start or did not answer in time."""


class SessionDataError(CachewiseError, ValueError):
    """Session data the store cannot keep: a key that is not a string, a key both set and removed, or a value larger
    than the cache's ``max_value_bytes``."""
