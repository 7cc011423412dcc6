"""How cachewise talks to a server, whichever it is: URLs, client pools, the protocol bytes of commands, Lua scripts,
and the pub/sub listener that wakes waiters.  No policy lives here: what to send is decided elsewhere, and every
command is sent through :class:`cachewise.executor.Executor`.  The embedded server itself is :mod:`cachewise.server`.
"""

from .command import Command
from .connection import ClientOptions, Connection
from .scripts import Script
from .urls import ServerAddress, parse_url, redact

__all__ = ["ClientOptions", "Command", "Connection", "Script", "ServerAddress", "parse_url", "redact"]
