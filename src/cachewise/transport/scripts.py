"""Server-side Lua scripts: kept as ``.lua`` files beside the module that uses them, loaded once, called by SHA.

A :class:`Script` is the source, its SHA and the protocol bytes that call and load it;
:class:`~cachewise.transport.command.Command` s carry its calls, and :class:`~cachewise.executor.Executor` sends
them (and, when a server that restarted or ran ``SCRIPT FLUSH`` answers ``NOSCRIPT``, loads it and resends just
those calls).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from . import resp

__all__ = ["Script"]


class Script:
    """One Lua script: its source, SHA and ``SCRIPT LOAD`` (run it with ``Connection.script`` / ``ascript``)."""

    __slots__ = ("load", "name", "sha", "source")

    def __init__(self, source: str, name: str = "script") -> None:
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        #: The ``SCRIPT LOAD`` of this script, in protocol bytes.
        self.load = resp.command("SCRIPT", "LOAD", source)

    @classmethod
    def beside(cls, package: str, filename: str, *, prelude: str | None = None) -> Script:
        """Load ``filename`` from the folder of ``package`` (the module that uses it), after ``prelude`` (a file of
        shared Lua functions in the same folder) when given."""
        folder = resources.files(package)
        source = folder.joinpath(filename).read_text(encoding="utf-8")
        if prelude is not None:
            source = folder.joinpath(prelude).read_text(encoding="utf-8") + "\n" + source
        return cls(source, filename)

    def evalsha(self, keys: list[str], args: list[Any]) -> bytes:
        """The ``EVALSHA`` of a call with ``keys`` and ``args``, in protocol bytes."""
        return resp.command("EVALSHA", self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"
