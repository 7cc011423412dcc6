"""What a read's reply means for the caller, without I/O: a value, a miss, or a reason to look again.

A :class:`ReadPlan` is what one read of a key fetches (the entry and its counters, as one ready ``MGET``; memoised
per key, since building it is most of a hit's own cost).  The :class:`EntryReader` decodes the reply, counts hits,
misses and unreadable values, and decides whether a hit should be refreshed (early, or because it is stale).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from ..entries import commands, verdicts
from ..entries.envelope import EntryError, payload_of
from ..failures import ErrorLog
from ..keyspace import KeySpace
from ..missing import MISSING
from ..serializers import Serializer
from ..signing import Signer, TamperedValue
from ..stats import Counters, StatsRegistry
from ..transport.command import Command
from .stampede import Protection, xfetch_due

__all__ = ["FAILED", "NO_HEAD", "RECHECK", "EntryReader", "ReadPlan"]

#: The entry has tags the reader did not name: read it again with their counters (:meth:`ReadPlan.with_tags`).
RECHECK: Any = object()
NO_HEAD: list[bytes] = []
#: The header of a read that failed (the server did not answer): the caller loads without the cache.
FAILED: list[bytes] = []


class ReadPlan:
    """One read of ``key`` knowing ``tokens`` (its tags): the keys (the entry, then its counters) and the ``MGET``."""

    __slots__ = ("counters", "entry", "group", "key", "keys", "mget", "tokens")

    def __init__(self, space: KeySpace, key: str, tokens: tuple[str, ...]) -> None:
        self.key = key
        self.tokens = tokens
        self.keys = commands.read_keys(space, key, tokens)
        self.entry = self.keys[0]
        self.counters = tuple(self.keys[1:])
        #: The key's version group counter (what :class:`~cachewise.engine.stampede.MissOdds` keeps its odds by).
        self.group = self.keys[2]
        #: The ``MGET`` once built (:attr:`command`); the hit path reads ``plan.mget or plan.command``, which skips
        #: a property call.
        self.mget: Command | None = None

    @property
    def command(self) -> Command:
        """The ``MGET`` of the entry and its counters (built when first needed: a read that takes the lease with it
        sends another command)."""
        command = self.mget
        if command is None:
            command = self.mget = Command.plain("read", "MGET", *self.keys, keys=self.keys)
        return command

    @property
    def read_counters(self) -> Command:
        """The ``MGET`` of the counters alone, one per set of counters (the keys of a group share it)."""
        command = _COUNTER_READS.get(self.counters)
        if command is None:
            if len(_COUNTER_READS) >= _COUNTER_READS_SIZE:
                _COUNTER_READS.clear()
            command = _COUNTER_READS[self.counters] = Command.plain(
                "counters", "MGET", *self.counters, keys=self.counters
            )
        return command


#: The ``MGET`` of each set of counters read lately (bytes that depend on the key names only: shared by every cache).
_COUNTER_READS: dict[tuple[str, ...], Command] = {}
_COUNTER_READS_SIZE = 4096


class EntryReader:
    """Turns replies into values for one cache (its serializer, its counters, its log)."""

    def __init__(
        self,
        namespace: str,
        serializer: Serializer,
        stats: StatsRegistry,
        errors: ErrorLog,
        signer: Signer | None = None,
    ) -> None:
        self.namespace = namespace
        self.serializer = serializer
        self.signer = signer
        self.code = serializer.code
        self.stats = stats
        self.errors = errors
        self._random = random.random

    def verdict(
        self, plan: ReadPlan, reply: list[Any], scope: Counters | None, serve_stale: bool
    ) -> tuple[Any, list[bytes]]:
        """``(value, header tokens)`` of a read; MISSING for a miss, a stale or an unreadable entry; RECHECK (not
        counted) when the entry has tags the reader did not name.  An entry past its TTL, kept for its grace period,
        is a hit only when ``serve_stale`` (a cache-aside read, which then reloads it).  Counts the read."""
        verdict, start, head = verdicts.judge(reply, plan.tokens)
        if verdict == verdicts.HIT:
            past = self.past_ttl(head) if not serve_stale and head[4] != b"0" else False
            if past is not False:  # past its TTL (kept for stale serving), or corrupt times
                if past is None:
                    self.invalid(scope, "corrupt entry times")
                self.stats.add(scope, "misses")
                return MISSING, NO_HEAD
            return self.decode(plan.entry, reply[0], start, scope, True), head
        if verdict == verdicts.RECHECK:
            return RECHECK, NO_HEAD
        if verdict == verdicts.INVALID:
            self.invalid(scope, "not a cachewise entry of this format")
        self.stats.add(scope, "misses")
        return MISSING, NO_HEAD

    def decode(self, entry: str, raw: bytes, start: int, scope: Counters | None, count: bool) -> Any:
        """The payload's value (counted as a hit when ``count``), or MISSING if it cannot be read."""
        try:
            if raw[3:4] != self.code:
                raise EntryError(f"entry written with serializer code {raw[3:4]!r}")
            payload = raw[start:]
            if self.signer is not None:
                payload = self.signer.verify(entry, raw[3:4], payload)
            value = self.serializer.loads(payload)
        except TamperedValue:  # never decoded: with pickle, decoding a forged value would run its code
            self.stats.add(scope, "tampered")
            self.errors.log(
                "tampered",
                f"a value under {entry!r} failed its signature check (tampered with, written without the key, or "
                "moved from another key): not decoded, treated as a miss",
                logging.WARNING,
            )
            if count:
                self.stats.add(scope, "misses")
            return MISSING
        except Exception as exc:  # corrupt payload or another serializer's: a miss, never an error
            self.invalid(scope, str(exc))
            if count:
                self.stats.add(scope, "misses")
            return MISSING
        if count:
            self.stats.hit(scope)
        return value

    def shared(self, entry: str, payload: bytes, scope: Counters | None) -> Any:
        """A value another caller of this process stored (its payload as written), decoded for this caller."""
        return self.decode(entry, b"cw1" + self.code + b"0000" + payload, 8, scope, False)

    def filled(self, entry: str, raw: bytes, scope: Counters | None) -> Any:
        """The value of an entry that ``acquire.lua`` found valid."""
        try:
            _, payload = payload_of(raw)
        except EntryError as exc:
            self.invalid(scope, str(exc))
            return MISSING
        return self.decode(entry, raw, len(raw) - len(payload), scope, False)

    def peek(self, plan: ReadPlan, reply: list[Any]) -> Any:
        """A later read of the same call (a waiter's): its value or MISSING, not counted again."""
        verdict, start, _ = verdicts.judge(reply, plan.tokens)
        if verdict != verdicts.HIT:
            return MISSING
        return self.decode(plan.entry, reply[0], start, None, False)

    @staticmethod
    def past_ttl(head: list[bytes]) -> bool | None:
        """Whether an entry is past its TTL (and only kept for its grace period); None when its times are corrupt."""
        times = verdicts.times(head)
        if times is None:
            return None
        written, ttl, _, _ = times
        return time.time() * 1000 >= written + ttl

    def refresh_due(self, head: list[bytes], protection: Protection) -> str | None:
        """Whether a hit should be reloaded: ``"stale"`` (past its TTL, kept for its grace period), ``"early"``
        (XFetch says so this time), ``"corrupt"`` (its header's times are not numbers: treat it as a miss), or
        None."""
        if head[4] == b"0" and (head[5] == b"0" or not protection.early_refresh):
            return None
        times = verdicts.times(head)
        if times is None:
            return "corrupt"
        written, ttl, grace, load = times
        now_ms = time.time() * 1000
        if grace and now_ms >= written + ttl:
            return "stale"
        if xfetch_due(now_ms, written, ttl, load, protection.early_refresh, 1.0 - self._random()):
            return "early"
        return None

    def invalid(self, scope: Counters | None, why: str) -> None:
        self.stats.add(scope, "invalid")
        self.errors.log(
            "invalid",
            f"unreadable value under a key of namespace {self.namespace!r} ({why}): treated as a miss, it will be "
            "replaced",
            logging.INFO,
        )
