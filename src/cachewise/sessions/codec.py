"""Session data to hash fields and back, without I/O.

Each data key is a field ``d:<key>`` whose value is the serializer's code byte and the payload, HMAC-signed when the
cache signs, bound to the session's lineage and the field (so a value cannot be moved to another session or field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SerializationError, SessionDataError
from ..serializers import Serializer
from ..signing import Signer, TamperedValue

__all__ = ["DATA", "Ignored", "SessionCodec", "data_key"]

#: The prefix of a data field.
DATA = "d:"


class Ignored(Exception):
    """A stored session this store cannot read: ``counter`` (``"tampered"`` or ``"invalid"``) and why."""

    def __init__(self, counter: str, why: str) -> None:
        super().__init__(why)
        self.counter = counter
        self.why = why


def data_key(key: object) -> str:
    if type(key) is not str:
        raise SessionDataError(f"session data keys must be str, got {type(key).__name__}: {key!r}")
    return key


class SessionCodec:
    """Encodes and decodes the data of one store's sessions (its cache's serializer, size limit and signer)."""

    def __init__(self, serializer: Serializer, max_bytes: int | None, signer: Signer | None, binding: str) -> None:
        self.serializer = serializer
        self.code = serializer.code
        self.max_bytes = max_bytes
        self.signer = signer
        self._binding = binding

    def _bound(self, lineage: str, field: str) -> str:
        return f"{self._binding}{lineage}\x00{field}"

    def encode(self, data: Mapping[str, Any], lineage: str, where: str) -> list[Any]:
        """Field, value pairs for ``data``: each value serialized (and signed) on its own."""
        if not isinstance(data, Mapping):
            raise SessionDataError(f"{where}: session data must be a dict, got {type(data).__name__}")
        out: list[Any] = []
        for key, value in data.items():
            field = DATA + data_key(key)
            try:
                payload = self.serializer.dumps(value)
            except SerializationError as exc:
                raise SerializationError(f"{where}: session key {key!r}: {exc}") from None
            if self.max_bytes is not None and len(payload) > self.max_bytes:
                raise SessionDataError(
                    f"{where}: session key {key!r} holds {len(payload):,} bytes, over the cache's max_value_bytes="
                    f"{self.max_bytes:,}: keep sessions small (store an id, load the rest from the database)"
                )
            if self.signer is not None:
                payload = self.signer.sign(self._bound(lineage, field), self.code, payload)
            out += (field, self.code + payload)
        return out

    def decode(self, fields: dict[bytes, bytes]) -> dict[str, Any]:
        """The data of a session from its hash's fields; :class:`Ignored` when they are not ours to read."""
        lineage = fields.get(b"m:l", b"").decode(errors="replace")
        data: dict[str, Any] = {}
        try:
            for name, raw in fields.items():
                if not name.startswith(b"d:"):
                    continue
                field = name.decode()
                if raw[:1] != self.code:
                    raise ValueError("written by another serializer")
                payload = raw[1:]
                if self.signer is not None:
                    payload = self.signer.verify(self._bound(lineage, field), self.code, payload)
                data[field[len(DATA) :]] = self.serializer.loads(payload)
        except TamperedValue:
            raise Ignored("tampered", "a value's signature does not verify (tampered with, or moved)") from None
        except Exception as exc:  # any decoder's error: the bytes are not a value we wrote
            raise Ignored("invalid", f"it cannot be decoded ({type(exc).__name__})") from None
        return data

    @staticmethod
    def removed(data: Mapping[str, Any], remove: Iterable[str], where: str) -> list[str]:
        """Validate a write (misuse raises) and return the fields it deletes."""
        if not isinstance(data, Mapping):
            raise SessionDataError(f"{where}: session data must be a dict, got {type(data).__name__}")
        if isinstance(remove, (str, bytes)):
            raise SessionDataError(f"{where}: remove= takes a collection of keys, e.g. remove=[{remove!r}]")
        removed = [data_key(k) for k in remove]
        both = {data_key(k) for k in data}.intersection(removed)
        if both:
            raise SessionDataError(f"{where}: keys both set and removed: {sorted(both)!r}; do one or the other")
        return [DATA + k for k in removed]
