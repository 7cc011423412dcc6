"""The protocol helpers build exactly the bytes redis-py itself would send (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
import redis._parsers.encoders
import redis.connection

from cachewise.transport.resp import bulk, command

#: redis-py's packers (untyped): the reference for the bytes sent
_redis: Any = redis.connection
_encoders: Any = redis._parsers.encoders

Part = bytes | str | int


def redis_py_packed(*args: Part) -> bytes:
    """The bytes redis-py sends for one command: its pure-Python packer and its default one (hiredis's when that
    is installed) must agree, so a mistake in the reference itself shows up too."""
    python = b"".join(_redis.PythonRespSerializer(6000, _encoders.Encoder("utf-8", "strict", False).encode).pack(*args))
    default = b"".join(_redis.Connection().pack_command(*args))
    assert python == default
    return python


LONG_BYTES = bytes(range(256)) * 60  # 15 360 bytes, every byte value (over redis-py's 6000-byte buffer cutoff)
LONG_TEXT = "é☃ \r\n" * 3000  # 27 000 bytes of UTF-8

ARGUMENTS: list[Part] = [
    "plain",
    "héllo ☃ 𝄞",
    "two words",
    b"raw",
    b"\xff\xfe\x00\x80",  # not UTF-8
    b"a\r\nb",  # the protocol's own line ending inside the data
    b"$3\r\n*1\r\n",
    "crlf\r\ninside",
    0,
    7,
    -1,
    2**63 - 1,
    -(2**63),
    10**30,
    "",
    b"",
    LONG_BYTES,
    LONG_TEXT,
]


@pytest.mark.parametrize("argument", ARGUMENTS, ids=lambda a: f"{type(a).__name__}-{len(str(a))}")
def test_one_argument_matches_redis_py(argument: Part) -> None:
    assert command("ECHO", argument) == redis_py_packed("ECHO", argument)


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"\xff\x00\xfe", b"a\r\nb\r\n", b" ", LONG_BYTES, LONG_TEXT.encode()],
    ids=lambda d: f"len{len(d)}",
)
def test_bulk_is_the_argument_as_redis_py_writes_it(data: bytes) -> None:
    head = b"*2\r\n$4\r\nECHO\r\n"
    packed = redis_py_packed("ECHO", data)
    assert packed.startswith(head)
    assert bulk(data) == packed[len(head) :]
    assert bulk(data) == b"$%d\r\n" % len(data) + data + b"\r\n"


def test_a_whole_command_of_mixed_arguments_matches_redis_py() -> None:
    parts: tuple[Part, ...] = ("SET", "ns:ключ", b"\x00\xff\r\n", "PX", 60_000, "GET")
    assert command(*parts) == redis_py_packed(*parts)
    assert command(*ARGUMENTS[:1], *ARGUMENTS) == redis_py_packed(*ARGUMENTS[:1], *ARGUMENTS)
    assert command("PING") == redis_py_packed("PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command(b"HGETALL", "k") == redis_py_packed(b"HGETALL", "k")


def test_commands_concatenate_into_one_payload() -> None:
    """A payload is just commands back to back, as redis-py's ``pack_commands`` sends a pipeline."""
    commands: list[tuple[Part, ...]] = [("SET", "k", LONG_BYTES, "PX", 1000), ("GET", "k"), ("HMGET", "h", "a", "")]
    payload = b"".join(command(*c) for c in commands)
    assert payload == b"".join(_redis.Connection().pack_commands(commands))
    assert payload == b"".join(redis_py_packed(*c) for c in commands)
