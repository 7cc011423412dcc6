"""What the benchmark scripts share: a free local port, installed versions, the server's name and version."""

from __future__ import annotations

import socket
from importlib import metadata

import redis

__all__ = ["free_port", "server_version", "version_of"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def server_version(url: str) -> str:
    r = redis.Redis.from_url(url)
    try:
        info = r.info("server")
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info.get('redis_version', '?')}"
    finally:
        r.close()
