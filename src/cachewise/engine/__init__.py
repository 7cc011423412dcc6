"""The read-through engine: what happens between a cache-aside call and the server.

* :mod:`~cachewise.engine.engine` — :class:`Engine`, the interface the :class:`~cachewise.Cache` facade uses;
* :mod:`~cachewise.engine.context` — what the flows know of their cache (pure: keys, readers, writers, load times);
* :mod:`~cachewise.engine.flows` — cache-aside after the first read, as flows (single flight, refresh, stale);
* :mod:`~cachewise.engine.ops` — the cache's other operations as flows (write, delete, bump, TTL, clear);
* :mod:`~cachewise.engine.steps` / :mod:`~cachewise.engine.driver` — the steps flows yield, and who runs them;
* :mod:`~cachewise.engine.reads` / :mod:`~cachewise.engine.writes` — replies into values, values into writes;
* :mod:`~cachewise.engine.stampede` — the policy: leases, XFetch, stale serving (pure);
* :mod:`~cachewise.engine.leases` / :mod:`~cachewise.engine.flights` — lease heartbeats and in-process single
  flight.
"""

from . import ops
from .context import Context, Request, Site
from .engine import Engine
from .reads import EntryReader, ReadPlan
from .stampede import DEFAULT, Protection
from .writes import EntryWriter

__all__ = [
    "DEFAULT",
    "Context",
    "Engine",
    "EntryReader",
    "EntryWriter",
    "Protection",
    "ReadPlan",
    "Request",
    "Site",
    "ops",
]
