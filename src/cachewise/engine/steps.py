"""The steps of the read-through flows, besides :class:`~cachewise.runner.Send`: each a small frozen dataclass with
one kind of reply, run by :mod:`cachewise.engine.driver`.

===================  ==============================================================================================
step                 reply
===================  ==============================================================================================
:class:`Load`        the loader's value (its exception is thrown in); the lease it names is kept alive meanwhile
:class:`Join`        a :class:`Joined`: lead the key in this process, or follow the caller that leads it
:class:`Share`       None: the payload this caller stored or read, for the followers that joined before it
:class:`Listen`      bool: whether fill notifications are flowing (subscribes on first use)
:class:`Wait`        bool: woken by a fill of the entry (False: the timeout passed)
:class:`Spawn`       None: the flow runs in the background (async code), or right away (sync code)
===================  ==============================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Hold", "Join", "Joined", "Listen", "Load", "Share", "Spawn", "Wait"]


@dataclass(frozen=True, slots=True)
class Hold:
    """A lease to keep alive while a load runs (for at most ``budget`` seconds: its waiters' patience).  The
    heartbeat also checks that the ``counters`` still hold the values the lease was taken under (``stamps``): if one
    moved, the load's value would be stale, so the lease is given back at once."""

    key: str
    token: str
    lease_ms: int
    budget: float
    counters: tuple[str, ...]
    stamps: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Load:
    """Run the loader; keep ``hold`` alive meanwhile."""

    hold: Hold | None = None


@dataclass(frozen=True, slots=True)
class Join:
    """Lead ``entry`` in this process, or wait up to ``timeout`` s for the caller of this process that leads it.  A
    ``holder`` (its read took the lease) never follows: it leads, or, when another caller leads here already (that
    one was told to wait for the lease), it goes on alone and that caller is woken by its fill."""

    entry: str
    timeout: float
    holder: bool = False


@dataclass(frozen=True, slots=True)
class Joined:
    """The reply to :class:`Join`: ``lead`` (this caller goes on to the lease; the flight ends with its flow), or a
    follower: ``payload`` is the leader's stored payload when this caller may take it, else None (read the key)."""

    lead: bool
    payload: bytes | None = None


LEAD = Joined(True)
FOLLOW = Joined(False)


@dataclass(frozen=True, slots=True)
class Share:
    """Offer ``payload`` (stored under this caller's lease, or read, by a command sent at ``sent_at``) to the callers
    of this process that follow this one."""

    entry: str
    payload: bytes
    sent_at: float


@dataclass(frozen=True, slots=True)
class Listen:
    """Make sure fill notifications of ``entry`` are flowing (subscribe to its channel on first use)."""

    entry: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait up to ``timeout`` s to be told of a fill of ``entry``; ``since``: the time the caller learned it must wait
    (a fill announced after it counts)."""

    entry: str
    timeout: float
    since: float


@dataclass(frozen=True, slots=True)
class Spawn:
    """Run ``flow`` (a refresh) in the background."""

    flow: Any
