"""Keys for function calls, without I/O.

Arguments are bound to the function's signature first (``inspect.Signature.bind`` + defaults), so ``f(1)``,
``f(x=1)`` and ``f()`` with ``x=1`` as default give the same key.  Then:

* with a template (``"product:{product_id}"``), the key is the template filled from the bound arguments;
* without one, it is ``module.qualname:`` + a digest of an unambiguous encoding of the bound arguments
  (``"1"``, ``1``, ``1.0``, ``True``, ``(1,)`` and ``[1]`` all differ), stable across processes and restarts.
  ``self``/``cls`` are left out, so every instance shares the cache of a method.

An argument whose only text form is ``<Foo object at 0x…>`` cannot make a stable key: that is an error asking for a
template (``key=``) or a ``__cache_key__()`` method on the class.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import inspect
import math
import string
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .errors import KeyTemplateError
from .keyspace import tag_token

__all__ = ["MEMO_SIZE", "CallKey", "canonical", "memo_type", "template_fields"]

_FLAT = (str, int, float, bool, type(None))

#: Whether an argument of this type may be looked up in :attr:`CallKey.memo`: exact ``int`` and ``str`` only.  Values
#: of other types can be equal with another text form (``1 == 1.0 == True``, a ``str`` enum and its value), so a
#: call with one of them builds its key.
memo_type = frozenset({int, str}).__contains__

#: How many calls' keys one function remembers (all are forgotten at once past it: no bookkeeping per call).
MEMO_SIZE = 4096
_formatter = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The argument names a template refers to (``"u:{user.id}:{n}"`` → ``["user", "n"]``)."""
    names = []
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise KeyTemplateError(f"key template {template!r} is not a valid format string: {exc}") from None
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        root = field_name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise KeyTemplateError(
                f"key template {template!r} has a positional field {{{field_name}}}: name the argument, "
                "e.g. 'product:{product_id}'"
            )
        names.append(root)
    return names


def canonical(value: Any, where: str = "argument") -> Any:
    """An unambiguous, JSON-encodable form of ``value``: equal forms only for equal values of the same type."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if type(value) is not int:
            return ["int", _qualname(type(value)), int(value)]
        return value if -(2**63) <= value < 2**63 else ["bigint", str(value)]
    if isinstance(value, float):
        return value if math.isfinite(value) else ["float", repr(value)]
    custom = getattr(type(value), "__cache_key__", None)
    if custom is not None:
        return ["ck", _qualname(type(value)), canonical(custom(value), where)]
    if isinstance(value, tuple):
        return ["tuple", [canonical(v, where) for v in value]]
    if isinstance(value, list):
        return ["list", [canonical(v, where) for v in value]]
    if isinstance(value, Mapping):
        items = sorted(
            ([_dumps(canonical(k, where)), canonical(v, where)] for k, v in value.items()),
            key=lambda kv: kv[0],
        )
        return ["dict", items]
    if isinstance(value, (set, frozenset)):
        kind = "set" if isinstance(value, set) else "frozenset"
        return [kind, sorted(_dumps(canonical(v, where)) for v in value)]
    if isinstance(value, (bytes, bytearray)):
        return ["bytes", bytes(value).hex()]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return [type(value).__name__, str(value)]
    if isinstance(value, enum.Enum):
        return ["enum", _qualname(type(value)), canonical(value.value, where)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ["dc", _qualname(type(value)), canonical(dataclasses.asdict(value), where)]
    if type(value).__repr__ is not object.__repr__:  # type: ignore[comparison-overlap]
        return ["repr", _qualname(type(value)), repr(value)]
    raise KeyTemplateError(
        f"{where} is a {_qualname(type(value))} with no stable text form (only '<object at 0x…>'), so it cannot "
        "be part of a cache key: pass key='...{field}...' naming the arguments that identify the result, or "
        "give the class a __cache_key__(self) method returning plain data"
    )


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class CallKey:
    """Builds the cache key (and tag names) of calls to one function."""

    def __init__(self, fn: Callable[..., Any], template: str | None = None, tags: tuple[str, ...] = ()) -> None:
        self.fn = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.param_names = [p.name for p in params]
        self._skip = 1 if params and params[0].name in ("self", "cls") else 0
        self.template = template
        self.tag_templates = tuple(tags)
        known = set(self.param_names)
        for text in ((template,) if template else ()) + self.tag_templates:
            for name in template_fields(text):
                if name not in known:
                    raise KeyTemplateError(
                        f"template {text!r} of {self.name} names {{{name}}}, but the function's arguments are "
                        f"({', '.join(self.param_names) or 'none'})"
                    )
        self._static_tags = tuple(t for t in self.tag_templates if not template_fields(t))
        self._static_tokens = tuple(dict.fromkeys(tag_token(t) for t in self._static_tags))
        self._dynamic_tags = any(template_fields(t) for t in self.tag_templates)
        simple = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self._positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] if simple else None
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}
        self._known = known
        #: The key and tag tokens of calls made with positional arguments of exact :func:`memo_type` types, by
        #: their arguments (a key is a pure function of them): a repeated call looks its key up instead of binding
        #: and filling a template again.  See :meth:`memorize`.
        self.memo: dict[tuple[Any, ...], tuple[str, tuple[str, ...]]] = {}

    @property
    def group(self) -> str | None:
        """The version group every key of this function falls in, when it is fixed (for ``invalidate_all``)."""
        if self.template is None:
            return self.name
        head = self.template.split(":", 1)[0]
        return head if head and not template_fields(head) and ":" in self.template else None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults applied, in signature order; TypeError as Python gives."""
        positional = self._positional
        if not kwargs and positional is not None and len(args) == len(self.param_names) == len(positional):
            return dict(zip(positional, args))  # the common call: every argument given by position
        if positional is not None and len(args) <= len(positional):
            values = dict(zip(positional, args))
            ok = True
            for name, value in kwargs.items():
                if name in values or name not in self._known:
                    ok = False
                    break
                values[name] = value
            if ok:
                if len(values) == len(self.param_names):
                    return {n: values[n] for n in self.param_names}
                out = {}
                for name in self.param_names:
                    if name in values:
                        out[name] = values[name]
                    elif name in self._defaults:
                        out[name] = self._defaults[name]
                    else:
                        ok = False
                        break
                if ok:
                    return out
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def key(self, arguments: dict[str, Any]) -> str:
        """The key of a bound call."""
        if self.template is not None:
            return self._fill(self.template, arguments)
        values = list(arguments.values())[self._skip :]
        encoded = b""
        if all(type(v) in _FLAT and (type(v) is not float or math.isfinite(v)) for v in values):
            try:
                encoded = orjson.dumps(values)
            except orjson.JSONEncodeError:  # an int beyond 64 bits
                encoded = b""
        if not encoded:
            names = self.param_names[self._skip :]
            encoded = orjson.dumps([canonical(v, f"argument {n!r} of {self.name}") for n, v in zip(names, values)])
        return f"{self.name}:{hashlib.blake2b(encoded, digest_size=16).hexdigest()}"

    def tags(self, arguments: dict[str, Any]) -> tuple[str, ...]:
        """The tags of a bound call (tag templates filled in)."""
        if not self._dynamic_tags:
            return self._static_tags
        return tuple(self._fill(t, arguments) for t in self.tag_templates)

    def tag_tokens(self, arguments: dict[str, Any]) -> tuple[str, ...]:
        """The tags of a bound call, encoded as stored (:func:`~cachewise.keyspace.tag_token`)."""
        if not self._dynamic_tags:
            return self._static_tokens
        return tuple(dict.fromkeys(tag_token(t) for t in self.tags(arguments)))

    def key_and_tokens(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """The key and the tag tokens of a call with these arguments (:meth:`bind`, :meth:`key`,
        :meth:`tag_tokens`: what every call of a decorated function needs)."""
        arguments = self.bind(args, kwargs)
        return self.key(arguments), self._static_tokens if not self._dynamic_tags else self.tag_tokens(arguments)

    def memorize(self, args: tuple[Any, ...]) -> tuple[str, tuple[str, ...]]:
        """:meth:`key_and_tokens` of a call with positional ``args`` only, every one of a :func:`memo_type` type,
        kept in :attr:`memo`."""
        keyed = self.key_and_tokens(args, {})
        memo = self.memo
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[args] = keyed
        return keyed

    def _fill(self, template: str, arguments: dict[str, Any]) -> str:
        try:
            return template.format_map(arguments)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise KeyTemplateError(f"cannot fill template {template!r} of {self.name}: {exc}") from None
