"""Where things live on the server: the layout of a namespace's keys, without I/O.

A namespace ``shop`` owns every key that starts with ``shop:``.  User keys are stored as ``shop:<key>``, so
``cache.set("product:42", ...)`` is readable as ``shop:product:42`` from any Redis client.  cachewise keeps its own
bookkeeping under ``shop:_cw:`` (version counters, tag counters, and later leases and limiter state); user keys may
not start with ``_cw:``.

Invalidation without SCAN: every entry is stamped, when written, with the values of the counters that can make it
stale (the namespace's version, its group's version, one counter per tag).  A read compares the stamp with the
counters in the same Lua call, so ``bump_version`` or ``invalidate_tags`` is one ``INCR`` however many keys it kills.
The *group* of a key is its first ``:``-separated segment (``product`` for ``product:42``).

Redis Cluster (a later step) only has to change :meth:`KeySpace.prefix` to put a namespace in one hash slot.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

from .errors import ConfigurationError, InvalidKeyError

__all__ = ["INTERNAL", "MAX_KEY_BYTES", "KeySpace"]

#: The segment under which cachewise keeps its own keys inside a namespace.
INTERNAL = "_cw"
#: Keys longer than this (in UTF-8 bytes, after the namespace) are shortened to a prefix plus a digest.
MAX_KEY_BYTES = 512
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@lru_cache(maxsize=4096)
def _quoted(group: str) -> str:
    return "v:" + quote(group, safe="")


def tag_token(tag: str) -> str:
    """A tag's name as it appears in stored headers and counter keys: percent-encoded, never a space."""
    if not isinstance(tag, str) or not tag:
        raise InvalidKeyError(f"a tag must be a non-empty string, got {tag!r}")
    return _token(tag)


@lru_cache(maxsize=4096)
def _token(tag: str) -> str:
    return quote(tag, safe="")


@dataclass(frozen=True)
class KeySpace:
    """The keys of one namespace."""

    namespace: str
    prefix: str = field(init=False)
    #: Prefix of cachewise's own keys in this namespace.
    internal: str = field(init=False)
    #: The counter that :meth:`Cache.bump_version` with no argument increments.
    namespace_version: str = field(init=False)
    #: Prefix of the tag counters; the Lua read appends a tag's token to it.
    tag_prefix: str = field(init=False)
    #: A SCAN ``MATCH`` pattern for every key of the namespace.
    pattern: str = field(init=False)
    #: The pub/sub channel on which every write and every released lease of the namespace is announced.
    fill_channel: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not _NAMESPACE_RE.match(self.namespace):
            raise ConfigurationError(
                f"namespace {self.namespace!r} is not usable: use 1-64 characters among letters, digits, "
                "'_', '.' and '-' (it prefixes every key, as 'namespace:key')"
            )
        prefix = self.namespace + ":"
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "internal", f"{prefix}{INTERNAL}:")
        object.__setattr__(self, "namespace_version", f"{prefix}{INTERNAL}:v")
        object.__setattr__(self, "tag_prefix", f"{prefix}{INTERNAL}:t:")
        object.__setattr__(self, "pattern", prefix + "*")  # namespaces hold no glob characters
        object.__setattr__(self, "fill_channel", f"{prefix}{INTERNAL}:fill")

    # -- user entries -----------------------------------------------------------------------------------------
    def entry(self, key: str) -> str:
        """The server key of a user key."""
        if type(key) is not str:
            raise InvalidKeyError(f"a cache key must be a str, got {type(key).__name__}: {key!r}")
        if not key:
            raise InvalidKeyError("a cache key must not be empty")
        if key.startswith(INTERNAL + ":"):
            raise InvalidKeyError(f"keys starting with '{INTERNAL}:' are kept for cachewise itself: {key!r}")
        if len(key) > MAX_KEY_BYTES // 4 and len(key.encode()) > MAX_KEY_BYTES:
            key = shorten(key)
        return self.prefix + key

    def lease(self, entry: str) -> str:
        """The lease key of an entry (its server key, from :meth:`entry`): who is loading it right now."""
        return f"{self.internal}l:{entry[len(self.prefix) :]}"

    @staticmethod
    def group_of(key: str) -> str:
        """The version group of a user key: its first ``:``-separated segment."""
        return key.partition(":")[0]

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def group_version(self, group: str) -> str:
        """The counter that ``bump_version(group)`` increments."""
        if not isinstance(group, str) or not group or ":" in group:
            raise InvalidKeyError(
                f"a version group is the first segment of a key (e.g. 'product' for 'product:42'), got {group!r};"
                " to invalidate a finer set of keys, give them a tag and call invalidate_tags()"
            )
        return self.internal + _quoted(group)

    def tag_version(self, tag: str) -> str:
        return self.tag_prefix + tag_token(tag)

    def owns(self, server_key: str) -> bool:
        return server_key.startswith(self.prefix)


def shorten(key: str) -> str:
    """A long key, made short deterministically: a readable prefix plus a digest of the whole key."""
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    head = key.encode()[:200].decode(errors="ignore")
    return f"{head}#{digest}"
