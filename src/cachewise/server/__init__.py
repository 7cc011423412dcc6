"""Connections to Redis-compatible servers: URLs, the embedded Valkey, client pools, Lua scripts."""

from .connection import Connection
from .embedded import EmbeddedServer, find_server_binary
from .scripts import Script
from .urls import ServerAddress, parse_url, redact

__all__ = [
    "Connection",
    "EmbeddedServer",
    "Script",
    "ServerAddress",
    "find_server_binary",
    "parse_url",
    "redact",
]
