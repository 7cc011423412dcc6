"""The one guarded path to the server: breaker, NOSCRIPT, error replies, counting; on every server kind, sync and
async."""

from __future__ import annotations

import asyncio

import pytest
import redis

from cachewise import Cache
from cachewise.executor import Failed
from cachewise.failures import CircuitOpen
from cachewise.transport.command import Command
from cachewise.transport.scripts import Script
from tests.modes import Mode


def _calls(ns: str) -> tuple[Command, Script]:
    incr = Script(f"return redis.call('INCR', KEYS[1]) -- {ns}", "incr")
    echo = Script(f"return ARGV[1] -- {ns}", "echo")
    fail = Script(f"return redis.error_reply('nope') -- {ns}", "fail")
    parts = [
        Command.script("t", incr, [f"{ns}:n"], []),
        Command.script("t", echo, [], ["hi"]),
        Command.script("t", fail, [], []),
        Command.script("t", incr, [f"{ns}:n"], []),
    ]
    return Command.join("scripts", parts, strict=False), incr


def test_scripts_runs_many_in_one_write_loading_the_ones_the_server_lacks(cache: Cache, raw: redis.Redis) -> None:
    """Several EVALSHAs in one payload: replies in order, an error reply in its place, and after ``SCRIPT FLUSH``
    the scripts are loaded and only the calls answered NOSCRIPT sent again (a write is not run twice)."""
    ns = cache.namespace
    calls, incr = _calls(ns)
    raw.script_flush()
    replies = cache.executor.run(calls)  # every call answered NOSCRIPT, then loaded and sent once more
    assert replies[:2] == [1, b"hi"] and replies[3] == 2
    assert isinstance(replies[2], redis.ResponseError) and "nope" in str(replies[2])
    replies = cache.executor.run(calls)  # all loaded now
    assert replies[:2] == [3, b"hi"] and replies[3] == 4
    raw.script_flush()
    raw.execute_command("SCRIPT", "LOAD", incr.source)  # only echo and fail are missing: incr must run once each
    replies = cache.executor.run(calls)
    assert replies[:2] == [5, b"hi"] and replies[3] == 6 and int(raw.get(f"{ns}:n") or 0) == 6
    raw.expire(f"{ns}:n", 60)


def test_an_error_reply_fails_a_strict_command_once_without_the_breaker(cache: Cache, mode: Mode) -> None:
    strict = Command.join("strict", [Command.plain("echo", "ECHO", "a"), Command.plain("bad", "NOSUCHCOMMAND")])
    ex = mode(cache.executor)
    reply = ex.attempt(strict)
    assert type(reply) is Failed and isinstance(reply.error, redis.ResponseError)
    with pytest.raises(redis.ResponseError):
        ex.run(strict)
    stats = cache.stats()
    assert stats.total.errors == 2 and stats.total.roundtrips == 2 and stats.breaker == "closed"


def test_one_part_answers_its_reply_several_a_list(cache: Cache, mode: Mode) -> None:
    ex = mode(cache.executor)
    assert ex.run(Command.plain("echo", "ECHO", "x")) == b"x"
    assert ex.run(Command.join("two", [Command.plain("e", "ECHO", "a"), Command.plain("e", "ECHO", "b")])) == [
        b"a",
        b"b",
    ]


def test_an_open_breaker_skips_the_server_and_counts_it(unique_namespace: str, mode: Mode) -> None:
    """A server that is gone: failures counted as errors until the breaker opens, then calls skip it (counted as
    skipped, no round trip)."""
    with Cache("redis://127.0.0.1:1/0", namespace=unique_namespace, breaker_threshold=2, breaker_reset=60) as cache:
        ex = mode(cache.executor)
        command = Command.plain("ping", "PING")
        for _ in range(2):
            assert type(ex.attempt(command)) is Failed
        skipped = ex.attempt(command)
        assert type(skipped) is Failed and isinstance(skipped.error, CircuitOpen)
        total = cache.stats().total
        assert (total.errors, total.skipped, total.roundtrips) == (2, 1, 2)
        assert cache.stats().breaker == "open"


def test_the_async_shell_is_bounded_like_the_sync_one(cache: Cache) -> None:
    """Many asyncio tasks at once: each command gets its reply (the loop's pool queues, it does not fail)."""

    async def main() -> list[bytes]:
        try:
            ex = cache.executor
            return list(await asyncio.gather(*(ex.arun(Command.plain("e", "ECHO", str(i))) for i in range(300))))
        finally:
            await cache.connection.aclose_loop()

    assert asyncio.run(main()) == [str(i).encode() for i in range(300)]
