"""Objects that must start afresh in a forked child: their threads do not exist there, and their locks may have been
held by a thread of the parent at the moment of the fork."""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["reset_in_child"]


class _Resettable(Protocol):
    def reset_after_fork(self) -> None: ...


_TRACKED: weakref.WeakSet[_Resettable] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_TRACKED):
        obj.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reset_in_child(obj: _Resettable) -> None:
    """Call ``obj.reset_after_fork()`` in every child process forked from now on (for as long as ``obj`` lives)."""
    _TRACKED.add(obj)
