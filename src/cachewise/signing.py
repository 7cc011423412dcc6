"""Signed payloads, without I/O: a value read from a shared server is verified before it is decoded.

With ``Cache(signing_key=...)`` every payload is stored as ``HMAC-SHA256(key, entry key, serializer code, payload)
+ payload``.  Binding the MAC to the entry's key means a signed value cannot be moved under another key, and to the
serializer's code that it cannot be relabelled for another serializer (bytes signed as JSON or as raw bytes can never
be handed to pickle).  A value whose MAC
does not verify (tampered with, written by someone without the key, or moved) is never decoded: it is a miss,
counted as ``tampered`` and logged.  Pickle is only available this way (``serializer="pickle"`` needs a key), so
unpickling only ever runs on bytes that this application signed.
"""

from __future__ import annotations

import hashlib
import hmac

from .errors import ConfigurationError

__all__ = ["MAC_BYTES", "Signer", "TamperedValue"]

MAC_BYTES = 32
_MIN_KEY_BYTES = 16


class TamperedValue(ValueError):
    """The stored value's signature does not verify."""


class Signer:
    """HMAC-SHA256 signing of payloads, bound to the entry key they are stored under."""

    def __init__(self, key: str | bytes) -> None:
        secret = key.encode() if isinstance(key, str) else bytes(key)
        if len(secret) < _MIN_KEY_BYTES:
            raise ConfigurationError(
                f"signing_key must be at least {_MIN_KEY_BYTES} bytes of secret (e.g. secrets.token_hex(32)), "
                "kept out of the code and the repository"
            )
        self._secret = secret

    def _mac(self, entry: str, code: bytes, payload: bytes) -> bytes:
        message = entry.encode() + b"\x00" + code + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def sign(self, entry: str, code: bytes, payload: bytes) -> bytes:
        """``payload`` signed for ``entry`` and the serializer ``code``."""
        return self._mac(entry, code, payload) + payload

    def verify(self, entry: str, code: bytes, signed: bytes) -> bytes:
        """The payload, or :class:`TamperedValue` when its MAC does not match (compared in constant time)."""
        mac, payload = signed[:MAC_BYTES], signed[MAC_BYTES:]
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, self._mac(entry, code, payload)):
            raise TamperedValue("signature does not verify")
        return payload

    def __repr__(self) -> str:
        return "Signer(<secret>)"
