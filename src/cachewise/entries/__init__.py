"""The entry protocol: how a cached value is stored on the server, and the calls that read, lease, write and
invalidate it; pure (no I/O), with its Lua scripts beside it.

* :mod:`~cachewise.entries.envelope` — the bytes of one stored value (magic, serializer code, header, payload);
* :mod:`~cachewise.entries.verdicts` — what a read found (a hit, a miss, a stale entry...);
* :mod:`~cachewise.entries.commands` — the server calls, each a ready :class:`~cachewise.transport.command.Command`.
"""

from . import commands, envelope, verdicts

__all__ = ["commands", "envelope", "verdicts"]
