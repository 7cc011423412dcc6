"""Cached SQL query results for dashboards: :class:`QueryCache` (rows and pandas DataFrames)."""

from __future__ import annotations

from .cache import QueryCache
from .normalize import normalize_sql, query_key

__all__ = ["QueryCache", "normalize_sql", "query_key"]
