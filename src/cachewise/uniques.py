"""Values that must differ between callers, processes and incarnations: lease tokens and the values of counters
created now.

They come from a private generator seeded by the operating system (and seeded again in a forked child, which would
otherwise repeat its parent's values), never from the module-level :mod:`random` that a program or a test may seed
with a constant (two processes seeded alike would take each other's leases).  Not from :mod:`secrets` either: that is
a system call per miss, and secrecy buys nothing here, since a client that can reach the server can read the keys
these values are stored in.
"""

from __future__ import annotations

import os
import random

__all__ = ["counter_value", "token"]

_generator = random.Random()  # seeded from os.urandom
_bits = _generator.getrandbits

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_generator.seed)


def token() -> str:
    """64 random bits, as 16 hex digits (a lease token)."""
    return f"{_bits(64):016x}"


def counter_value() -> str:
    """52 random bits, in decimal (a counter created now: ``INCR`` still works on it, and no earlier incarnation of
    the counter can have had it)."""
    return str(_bits(52))
