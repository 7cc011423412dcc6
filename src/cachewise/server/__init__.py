"""The embedded server: a real Valkey that cachewise starts, shares within the process (and with local processes
that name the same directory), and stops.  How cachewise *talks* to any server is :mod:`cachewise.transport`."""

from .embedded import EmbeddedServer, find_server_binary

__all__ = ["EmbeddedServer", "find_server_binary"]
