""":data:`MISSING`: the answer of a read that found nothing, told apart from a cached ``None``."""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING"]


class _Missing:
    """The type of :data:`MISSING` (one instance)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


#: Returned by ``cache.get(key, default=MISSING)`` on a miss, so that a cached ``None`` is told apart.
MISSING: Any = _Missing()
