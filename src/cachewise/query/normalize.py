"""Query cache keys, without I/O: SQL normalisation and the key of (query, parameters, database, context).

Normalisation removes what cannot change a query's result: ``--`` line comments, ``/* ... */`` block comments and
runs of whitespace, all outside quoted text.  Quoted text is kept byte for byte: string literals (``'...'`` with
``''`` as an escaped quote), quoted identifiers (``"..."``, MySQL's backticks) and PostgreSQL dollar-quoted strings
(``$$...$$``, ``$tag$...$tag$``).  Case is never changed (a literal's case is data, and some databases compare
identifiers case-sensitively), and nothing is reordered: two queries share an entry only when they differ in
comments or whitespace.  A comment becomes one space (``a/**/b`` is ``a b``, as for the database's own parser).

The key is ``"query:" + sha256`` of the canonical JSON of the normalised SQL, the parameters (sorted names, each
value with its type: ``1``, ``1.0``, ``"1"`` and ``True`` are different keys), the database identity (its URL
without the password) and the context (whoever the result depends on: user, tenant, row-level-security role).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["KEY_PREFIX", "canonical", "database_identity", "normalize_sql", "query_key"]

KEY_PREFIX = "query:"

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_QUOTES = {"'": "'", '"': '"', "`": "`"}


def _space(out: list[str]) -> None:
    """Append one separating space, unless the text is empty or already ends with one."""
    if out and out[-1] != " ":
        out.append(" ")


def normalize_sql(sql: str) -> str:
    """``sql`` without comments, with every run of whitespace outside quoted text as one space, stripped."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _QUOTES:
            # A quoted run ends at the next unpaired closing quote; a doubled quote is an escaped one.
            close = _QUOTES[ch]
            j = i + 1
            while j < n:
                if sql[j] == close:
                    if j + 1 < n and sql[j + 1] == close:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1])  # unterminated: the rest, verbatim
            i = j + 1
        elif ch == "$" and (m := _DOLLAR_TAG.match(sql, i)) and not (i and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = m.group()
            end = sql.find(tag, m.end())
            stop = n if end < 0 else end + len(tag)
            out.append(sql[i:stop])
            i = stop
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            _space(out)
        elif ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            _space(out)
        elif ch.isspace():
            while i < n and sql[i].isspace():
                i += 1
            _space(out)
        else:
            # Copy a run of ordinary characters at once.
            j = i + 1
            while j < n and not (sql[j].isspace() or sql[j] in "'\"`$-/"):
                j += 1
            out.append(sql[i:j])
            i = j
    return "".join(out).strip()


def canonical(value: Any) -> Any:
    """A JSON-safe form of a parameter (or context) value that keeps its type, so that values of different types
    never share a key.  Raises TypeError for types whose identity cannot be told from their value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, enum.Enum):
        return {"enum": f"{type(value).__module__}.{type(value).__qualname__}", "v": canonical(value.value)}
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, _dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, _dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, _dt.timedelta):
        return {"timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, Mapping):
        items = [(str(k), canonical(v)) for k, v in value.items()]
        if len({k for k, _ in items}) != len(items):
            raise TypeError("mapping keys must stay distinct as strings")
        return {"map": sorted(items)}
    if isinstance(value, (list, tuple)):
        return {"list": [canonical(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((canonical(v) for v in value), key=lambda c: orjson.dumps(c))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dataclass": type(value).__qualname__, "v": canonical(dataclasses.asdict(value))}
    raise TypeError(
        f"cannot build a query cache key from a {type(value).__qualname__}: pass str, numbers, Decimal, dates, "
        "UUID, bytes, or lists/dicts of them"
    )


def database_identity(url: Any) -> str:
    """The database's identity for keys: its URL without the password (a SQLAlchemy ``URL``; a string is taken as
    given, so strip its password first)."""
    render = getattr(url, "render_as_string", None)
    if render is not None:
        text: str = render(hide_password=True)  # the password as "***", whatever it is
        return text
    return str(url)


def query_key(sql: str, params: Mapping[str, Any] | None, database: str, context: Any = None) -> str:
    """The cache key of one query: ``"query:" + sha256(canonical JSON)``."""
    document = {
        "sql": normalize_sql(sql),
        "params": canonical(dict(params or {})),
        "db": database,
        "context": canonical(context),
    }
    digest = hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return KEY_PREFIX + digest
