"""A command ready for the server, without I/O: protocol bytes, what they call, which keys they touch.

Every component builds its server calls as :class:`Command` s (memoised where a call repeats, as a hit's read does)
and hands them to the one guarded path, :class:`cachewise.executor.Executor`.  A command is one or more *parts*
(each one Redis command: an ``MGET``, an ``EVALSHA``, an ``HGETALL``...) sent in one write and answered in order.
Each part names the keys it touches and the Lua script it calls, if any: the executor loads a script the server
answers ``NOSCRIPT`` for, and a Cluster router sends each part to the node of its keys' slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import resp
from .scripts import Script

__all__ = ["Command"]


class Command:
    """One or more ready-encoded commands, sent in one write.

    ``name`` says what it is for (``"read"``, ``"acquire"``, ``"ratelimit api"``...): it names the operation in
    logs, errors and metrics.  ``strict``: an error reply of any part is raised (after the others were read);
    otherwise error replies stay in place in the list of replies (a per-entity error in a batch read).
    """

    __slots__ = ("count", "keys", "name", "parts", "payload", "route", "scripted", "scripts", "strict")

    def __init__(
        self,
        name: str,
        parts: Sequence[bytes],
        keys: Sequence[tuple[str, ...]],
        scripts: Sequence[Script | None],
        *,
        strict: bool = True,
    ) -> None:
        if not (len(parts) == len(keys) == len(scripts)) or not parts:
            raise ValueError("a command has one or more parts, each with its keys and script (or None)")
        self.name = name
        self.parts = tuple(parts)
        self.keys = tuple(keys)
        self.scripts = tuple(scripts)
        self.payload = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.count = len(self.parts)
        self.strict = strict
        #: Whether any part calls a script (only those can meet ``NOSCRIPT``).
        self.scripted = any(self.scripts)
        #: Where a Cluster sends the parts (:class:`~cachewise.transport.routes.Route`), kept by the cluster
        #: transport for a command sent again (a memoised read).
        self.route: Any = None

    # -- builders -------------------------------------------------------------------------------------------------
    @classmethod
    def plain(cls, name: str, *args: bytes | str | int | float, keys: Iterable[str] = ()) -> Command:
        """One plain command, e.g. ``Command.plain("ttl", "PTTL", key, keys=[key])``."""
        return cls(name, [resp.command(*args)], [tuple(keys)], [None])

    @classmethod
    def script(cls, name: str, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Command:
        """One call of a Lua script by SHA, with every key it touches in ``keys``."""
        return cls(name, [script.evalsha(list(keys), list(args))], [tuple(keys)], [script])

    @classmethod
    def join(cls, name: str, commands: Iterable[Command], *, strict: bool = True) -> Command:
        """Several commands sent in one write, their replies in order (one list)."""
        parts: list[bytes] = []
        keys: list[tuple[str, ...]] = []
        scripts: list[Script | None] = []
        for command in commands:
            parts += command.parts
            keys += command.keys
            scripts += command.scripts
        return cls(name, parts, keys, scripts, strict=strict)

    def all_keys(self) -> list[str]:
        """Every key the command touches, in order, once each."""
        return list(dict.fromkeys(k for keys in self.keys for k in keys))

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {self.count} part{'s' if self.count > 1 else ''})"
