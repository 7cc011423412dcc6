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

__all__ = ["Script", "known_script"]


#: Every script of the package by SHA (a cluster stream routes a ready-encoded call by what its script is).
_KNOWN: dict[str, Script] = {}


def known_script(sha: str) -> Script | None:
    """The :class:`Script` of ``sha``, if the package defined one."""
    return _KNOWN.get(sha)


class Script:
    """One Lua script: its source, SHA and ``SCRIPT LOAD`` (run it with ``Connection.script`` / ``ascript``)."""

    __slots__ = ("load", "name", "per_key", "sha", "source")

    def __init__(self, source: str, name: str = "script", *, per_key: str | None = None) -> None:
        self.source = source
        self.name = name
        #: Set for a script whose keys are independent of each other (each handled alone): on a Cluster a call is
        #: split by slot and the replies merged, by position ("columns": one list per column, in key order) or added
        #: ("sum").  See :mod:`cachewise.transport.routes`.
        self.per_key = per_key
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        #: The ``SCRIPT LOAD`` of this script, in protocol bytes.
        self.load = resp.command("SCRIPT", "LOAD", source)
        _KNOWN.setdefault(self.sha, self)

    @classmethod
    def beside(cls, package: str, filename: str, *, prelude: str | None = None, per_key: str | None = None) -> Script:
        """Load ``filename`` from the folder of ``package`` (the module that uses it), after ``prelude`` (a file of
        shared Lua functions in the same folder) when given."""
        folder = resources.files(package)
        source = folder.joinpath(filename).read_text(encoding="utf-8")
        if prelude is not None:
            source = folder.joinpath(prelude).read_text(encoding="utf-8") + "\n" + source
        return cls(source, filename, per_key=per_key)

    def evalsha(self, keys: list[str], args: list[Any]) -> bytes:
        """The ``EVALSHA`` of a call with ``keys`` and ``args``, in protocol bytes."""
        return resp.command("EVALSHA", self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"
