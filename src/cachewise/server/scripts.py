"""Server-side Lua scripts: kept as ``.lua`` files beside the module that uses them, loaded once, called by SHA.

A server that restarted (or ran ``SCRIPT FLUSH``) answers ``NOSCRIPT``; the script is then loaded again and the
call retried once.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.asyncio import Redis as AsyncRedis
from redis.client import Redis
from redis.exceptions import NoScriptError

__all__ = ["Script"]

KeyOrArg = str | bytes | int | float


class Script:
    """One Lua script; call it with a sync or an asyncio redis-py client."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, source: str, name: str = "script") -> None:
        self.source = source
        self.name = name
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def beside(cls, package: str, filename: str, *, prelude: str | None = None) -> Script:
        """Load ``filename`` from the folder of ``package`` (the module that uses it), after ``prelude`` (a file of
        shared Lua functions in the same folder) when given."""
        folder = resources.files(package)
        source = folder.joinpath(filename).read_text(encoding="utf-8")
        if prelude is not None:
            source = folder.joinpath(prelude).read_text(encoding="utf-8") + "\n" + source
        return cls(source, filename)

    def __call__(self, client: Redis, keys: list[str], args: list[KeyOrArg]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def acall(self, client: AsyncRedis, keys: list[str], args: list[KeyOrArg]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"
