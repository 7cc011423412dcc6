"""How values become bytes and back.  No pickle by default: a value read from a shared server must never run code.

* :class:`JsonSerializer` (the default, on orjson) stores what JSON can express, and brings back ``datetime``,
  ``date``, ``time``, ``Decimal``, ``bytes``, ``set`` and ``frozenset`` with their types (a tagged object
  ``{"__cw__": kind, "v": ...}``; such a payload is marked by its first byte, and only marked payloads are walked
  when read).  Like JSON itself it
  returns tuples as lists, ``UUID`` and ``Enum`` members as their values, dataclasses as dicts; an aware
  ``datetime`` comes back with its fixed UTC offset (a ``ZoneInfo`` name is not kept).
* :class:`MsgpackSerializer` (``pip install cachewise[msgpack]``) is more compact, with the same type rules.

* :class:`PickleSerializer` only with a signing key (see :mod:`cachewise.signing`).

A serializer has a one-byte ``code`` written into each entry's header, so a value written by another serializer
is recognised, not misread.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import pickle
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import orjson

from .errors import ConfigurationError, SerializationError

__all__ = ["JsonSerializer", "MsgpackSerializer", "PickleSerializer", "Serializer", "get_serializer"]

_TAG = "__cw__"
#: First byte of a JSON payload that holds tagged values (no JSON text starts with it).
_MARK = b"\x01"
#: First byte of a msgpack payload that holds tagged values (0xc1 is never used by msgpack).
_MSGPACK_MARK = b"\xc1"


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back.  ``code`` is one ASCII byte that identifies the format."""

    name: str
    code: bytes

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _unsupported(obj: Any) -> SerializationError:
    kind = type(obj)
    return SerializationError(
        f"cannot store a value of type {kind.__module__}.{kind.__qualname__}: the cache holds data, not objects. "
        "Return a dict/list/str/number (e.g. dataclasses.asdict(x) or model.model_dump()), "
        "or pass a serializer that knows this type"
    )


def _tag_value(obj: Any) -> dict[str, Any]:
    """The tagged form of a type JSON cannot express; raises for anything else."""
    if isinstance(obj, _dt.datetime):
        return {_TAG: "datetime", "v": obj.isoformat()}
    if isinstance(obj, _dt.date):
        return {_TAG: "date", "v": obj.isoformat()}
    if isinstance(obj, _dt.time):
        return {_TAG: "time", "v": obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return {_TAG: "decimal", "v": str(obj)}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {_TAG: "bytes", "v": bytes(obj).hex()}
    if isinstance(obj, frozenset):
        return {_TAG: "frozenset", "v": list(obj)}
    if isinstance(obj, set):
        return {_TAG: "set", "v": list(obj)}
    raise _unsupported(obj)


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "datetime": _dt.datetime.fromisoformat,
    "date": _dt.date.fromisoformat,
    "time": _dt.time.fromisoformat,
    "decimal": decimal.Decimal,
    "bytes": bytes.fromhex,
    "set": set,
    "frozenset": frozenset,
}


def _untag(obj: Any) -> Any:
    """Walk a decoded structure and turn tagged objects back into their types."""
    if isinstance(obj, dict):
        kind = obj.get(_TAG)
        if kind is not None and len(obj) == 2 and "v" in obj:
            inner = obj["v"]
            if isinstance(inner, list):
                inner = [_untag(x) for x in inner]
            try:
                return _UNTAG[kind](inner)
            except (KeyError, ValueError, TypeError, decimal.InvalidOperation):
                return obj
        return {k: _untag(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untag(x) for x in obj]
    return obj


class JsonSerializer:
    """JSON through orjson (the default)."""

    name = "json"
    code = b"j"
    _options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dumps(self, value: Any) -> bytes:
        tagged = False

        def default(obj: Any) -> Any:
            nonlocal tagged
            tagged = True
            return _tag_value(obj)

        try:
            out = orjson.dumps(value, default=default, option=self._options)
        except SerializationError:
            raise
        except (TypeError, orjson.JSONEncodeError) as exc:
            cause = exc.__cause__
            if isinstance(cause, SerializationError):
                raise cause from None
            hint = " (store big integers as str)" if "64-bit" in str(exc) else ""
            raise SerializationError(f"cannot store this value as JSON: {exc}{hint}") from exc
        # A payload with tagged types is marked, so that reads of every other payload never walk it.
        return _MARK + out if tagged else out

    def loads(self, data: bytes) -> Any:
        if data[:1] == _MARK:
            return _untag(orjson.loads(data[1:]))
        return orjson.loads(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"


class MsgpackSerializer:
    """MessagePack (``pip install cachewise[msgpack]``): smaller than JSON, same type rules."""

    name = "msgpack"
    code = b"m"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "serializer='msgpack' needs the msgpack package: pip install 'cachewise[msgpack]'"
            ) from exc
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def _default(self, obj: Any) -> Any:
        if isinstance(obj, int):  # msgpack hands over the integers it cannot hold
            raise SerializationError(f"cannot store the integer {obj} as msgpack: beyond 64 bits (store it as str)")
        # What orjson does natively, so that both serializers give back the same types.
        if isinstance(obj, uuid.UUID):
            return str(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return _tag_value(obj)

    def dumps(self, value: Any) -> bytes:
        tagged = False

        def default(obj: Any) -> Any:
            nonlocal tagged
            out = self._default(obj)
            tagged = tagged or (isinstance(out, dict) and _TAG in out)
            return out

        try:
            data: bytes = self._packb(value, default=default, use_bin_type=True, datetime=False)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot store this value as msgpack: {exc}") from exc
        return _MSGPACK_MARK + data if tagged else data

    def loads(self, data: bytes) -> Any:
        if data[:1] == _MSGPACK_MARK:
            return _untag(self._unpackb(data[1:], raw=False, strict_map_key=False))
        return self._unpackb(data, raw=False, strict_map_key=False)

    def __repr__(self) -> str:
        return "MsgpackSerializer()"


class PickleSerializer:
    """pickle, for Python objects JSON cannot hold.  Only with a signing key (``Cache(serializer="pickle",
    signing_key=...)``): unpickling runs code, so it must only ever see bytes this application signed."""

    name = "pickle"
    code = b"p"

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"cannot pickle this value: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PickleSerializer()"


def get_serializer(spec: str | Serializer | None, *, signed: bool = False) -> Serializer:
    """A serializer from a name (``"json"``, ``"msgpack"``, ``"pickle"``) or an object implementing
    :class:`Serializer`.  ``"pickle"`` is refused unless ``signed`` (the cache has a signing key)."""
    if spec is None or spec == "json":
        return JsonSerializer()
    if spec == "msgpack":
        return MsgpackSerializer()
    if spec == "pickle" or isinstance(spec, PickleSerializer):
        if not signed:
            raise ConfigurationError(
                "serializer='pickle' needs signing_key=...: a pickle read from a shared server could run any code, "
                "so cachewise only unpickles values this application signed (HMAC-SHA256). Prefer 'json' or "
                "'msgpack' when the values are data."
            )
        return PickleSerializer()
    if isinstance(spec, str):
        raise ConfigurationError(f"unknown serializer {spec!r}: use 'json' (default), 'msgpack', 'pickle' or an object")
    if not isinstance(spec, Serializer) or not isinstance(spec.code, bytes) or len(spec.code) != 1:
        raise ConfigurationError(
            "a serializer needs name, a one-byte code, dumps(value) -> bytes and loads(bytes) -> value"
        )
    return spec
