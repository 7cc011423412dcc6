"""Where things live on the server: every key cachewise reads or writes is built here, without I/O.

A namespace ``shop`` owns every key that starts with ``shop:``.  User keys are stored as ``shop:<key>``, so
``cache.set("product:42", ...)`` is readable as ``shop:product:42`` from any Redis client.  cachewise keeps its own
bookkeeping under ``shop:_cw:`` (version and tag counters, leases, rate-limit state, sessions); user keys may not
start with ``_cw:``.

Invalidation without SCAN: every entry is stamped, when written, with the values of the counters that can make it
stale (the namespace's version, its group's version, one counter per tag); a read fetches the counters with the
entry and compares.  So ``bump_version`` or ``invalidate_tags`` is one ``INCR`` however many keys it kills.  The
*group* of a key is its first ``:``-separated segment (``product`` for ``product:42``).

Hash slots (Redis Cluster hashes a key, or the part between its first ``{`` and the next ``}``, to one of 16384
slots, and a Lua script may only touch keys of one slot).  The layout keeps what a script touches together and
spreads everything else:

* an entry and its **lease** share a slot: the lease is ``shop:_cw:l:{shop:product:42}``, whose hash tag is the
  entry's whole key.  An entry whose user key contains a brace gets a tag of its own, a digest of the key
  (``shop:{3fa2c1d0e5b7}we{ir}d``), since the user's braces would otherwise pick its slot;
* the **counters** (namespace and group versions, tags) are keys of their own, apart from the entries, so the entries
  of one namespace spread over every slot; they share one slot (their hash tag is the namespace,
  ``shop:_cw:{shop}v``): every hit of the namespace reads its namespace counter anyway, so the others add no node to
  the read — a hit touches at most two nodes, the entry's and the counters' — and ``counters.lua`` is one call;
* a **session** and the session its id is rotated to share a slot: the key's hash tag is the first three characters
  of the id, which a rotation keeps (:mod:`cachewise.sessions`); each user's **index** of sessions has its own slot;
* a **feature** entity's hash has its own slot; **rate-limit** state is one key per limit and identity, the
  identity in braces: the limits of one identity, checked by one script call, share a slot.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

from .errors import ConfigurationError, InvalidKeyError

__all__ = ["INTERNAL", "MAX_KEY_BYTES", "KeySpace", "tag_token"]

#: The segment under which cachewise keeps its own keys inside a namespace.
INTERNAL = "_cw"
#: Keys longer than this (in UTF-8 bytes, after the namespace) are shortened to a prefix plus a digest.
MAX_KEY_BYTES = 512
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: Characters of a session id that pick its slot (kept by a rotation).
SESSION_SLOT_CHARS = 3


@lru_cache(maxsize=4096)
def _quoted(group: str) -> str:
    return "v:" + quote(group, safe="")


def tag_token(tag: str) -> str:
    """A tag's name as it appears in stored headers and counter keys: percent-encoded, never a space or a brace."""
    if not isinstance(tag, str) or not tag:
        raise InvalidKeyError(f"a tag must be a non-empty string, got {tag!r}")
    return _token(tag)


@lru_cache(maxsize=4096)
def _token(tag: str) -> str:
    return quote(tag, safe="")


def _slot_tag(key: str) -> str:
    """A key's own hash tag: a digest of it (used when the key contains braces)."""
    return "{" + hashlib.blake2b(key.encode(), digest_size=6).hexdigest() + "}"


@dataclass(frozen=True)
class KeySpace:
    """The keys of one namespace."""

    namespace: str
    #: Wake-ups on sharded pub/sub (a Cluster): each entry's fills go to a shard channel in the entry's slot
    #: (:meth:`fill_channel_of`), published with ``SPUBLISH``, instead of the namespace's one classic channel.
    sharded_fills: bool = False
    prefix: str = field(init=False)
    #: Prefix of cachewise's own keys in this namespace.
    internal: str = field(init=False)
    #: What every version and tag counter of the namespace starts with; its hash tag is the namespace.
    counters_prefix: str = field(init=False)
    #: The counter that :meth:`Cache.bump_version` with no argument increments.
    namespace_version: str = field(init=False)
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
        internal = f"{prefix}{INTERNAL}:"
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "internal", internal)
        counters = f"{internal}{{{self.namespace}}}"  # every counter of the namespace: one hash slot
        object.__setattr__(self, "counters_prefix", counters)
        object.__setattr__(self, "namespace_version", f"{counters}v")
        object.__setattr__(self, "pattern", prefix + "*")  # namespaces hold no glob characters
        object.__setattr__(self, "fill_channel", f"{internal}fill")

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
        if "{" in key or "}" in key:
            return self.prefix + _slot_tag(key) + key
        return self.prefix + key

    def lease(self, entry: str) -> str:
        """The lease key of an entry (its server key, from :meth:`entry`): who is loading it right now.  It shares the
        entry's hash slot."""
        return self._beside(entry, "l:")

    def fill_channel_of(self, entry: str) -> str:
        """The pub/sub channel a fill of ``entry`` is announced on: the namespace's :attr:`fill_channel`, or with
        :attr:`sharded_fills` a shard channel in the entry's slot (it holds a hash tag: scripts ``SPUBLISH`` it)."""
        return self._beside(entry, "f:") if self.sharded_fills else self.fill_channel

    def _beside(self, entry: str, kind: str) -> str:
        """A name in the slot of ``entry``."""
        if "{" in entry:  # the entry carries its own tag (first in it, after the namespace): keep it first here
            return f"{self.internal}{kind}{entry}"
        return f"{self.internal}{kind}{{{entry}}}"

    @staticmethod
    def group_of(key: str) -> str:
        """The version group of a user key: its first ``:``-separated segment."""
        return key.partition(":")[0]

    # -- counters ---------------------------------------------------------------------------------------------
    def group_version(self, group: str) -> str:
        """The counter that ``bump_version(group)`` increments."""
        if not isinstance(group, str) or not group or ":" in group:
            raise InvalidKeyError(
                f"a version group is the first segment of a key (e.g. 'product' for 'product:42'), got {group!r};"
                " to invalidate a finer set of keys, give them a tag and call invalidate_tags()"
            )
        return self.counters_prefix + _quoted(group)

    def tag_version(self, tag: str) -> str:
        """The counter that ``invalidate_tags(tag)`` increments."""
        return self.tag_counter(tag_token(tag))

    def tag_counter(self, token: str) -> str:
        """The counter of a tag given as its token (:func:`tag_token`, as stored in entry headers)."""
        return f"{self.counters_prefix}t:{token}"

    # -- the other components' keys ---------------------------------------------------------------------------
    def ratelimit(self, limiter: str, spec: str, identity: str) -> str:
        """The state of one limit (``spec``, e.g. ``tb100p60s``) of rate limiter ``limiter`` for one identity (its
        token: percent-encoded, never a brace).  The identity is the key's hash tag: the limits of one identity share
        a slot, so that one script call checks them all on a Cluster, and identities spread over every slot."""
        return f"{self.internal}rl:{limiter}:{spec}:{{{identity}}}"

    @property
    def ratelimit_pattern(self) -> str:
        """A SCAN ``MATCH`` pattern for every rate-limit key of the namespace."""
        return f"{self.internal}rl:*"

    def session(self, store: str, sid: str) -> str:
        """The hash of one session of session store ``store`` (its prefix); the first characters of the id pick its
        slot, so that a rotation (which keeps them) can rename it in one step."""
        head, rest = sid[:SESSION_SLOT_CHARS], sid[SESSION_SLOT_CHARS:]
        return f"{self.internal}s:{store}:{{{head}}}{rest}"

    def session_context(self, store: str) -> str:
        """The context (not a key) that the values of session store ``store`` are signed under, with their session's
        lineage and field: a value moved to another store, session or field does not verify."""
        return f"{self.internal}s:{store}:"

    def session_index(self, store: str, owner: str) -> str:
        """The set of session ids of one owner (its token: percent-encoded) in session store ``store``."""
        return f"{self.internal}u:{store}:{owner}"

    def feature(self, entity: str, entity_id: object) -> str:
        """The hash of one entity's features (``shop:features:user:7``)."""
        return f"{self.prefix}features:{entity}:{entity_id}"

    def tracked_prefixes(self) -> list[str]:
        """What a local tier asks the server to announce changes of: every entry and counter of the namespace."""
        return [self.prefix]

    def owns(self, server_key: str) -> bool:
        return server_key.startswith(self.prefix)


def shorten(key: str) -> str:
    """A long key, made short deterministically: a readable prefix plus a digest of the whole key."""
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    head = key.encode()[:200].decode(errors="ignore")
    return f"{head}#{digest}"
