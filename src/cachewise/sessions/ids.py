"""Session ids and owners, without I/O: unguessable ids, their exact form, rotation, and how owners appear in keys.

Ids are 32 bytes from :mod:`secrets` (256 bits), URL-safe base64 without padding: 43 characters of
``[A-Za-z0-9_-]``, safe in a cookie and a URL, never derived from user data.  :func:`is_session_id` checks the exact
form (including the last character, which only carries 4 bits), so a forged or malformed id (an attacker's chosen
value, ``../x``, non-ASCII, megabytes) is rejected before any server call.

A rotated id (:func:`rotated_id`) keeps the first three characters of the old one, which pick the hash slot of the
session's key (:meth:`~cachewise.keyspace.KeySpace.session`), so that a rotation is one atomic ``RENAME`` on a
Cluster too; its other 40 characters are fresh (238 random bits: an old id tells nothing useful about the new one).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from urllib.parse import quote

from ..errors import InvalidKeyError
from ..keyspace import SESSION_SLOT_CHARS

__all__ = [
    "SESSION_ID_BYTES",
    "SESSION_ID_LENGTH",
    "fingerprint",
    "is_session_id",
    "new_session_id",
    "owner_token",
    "rotated_id",
]

#: Random bytes in a session id (256 bits; at least 128 are needed).
SESSION_ID_BYTES = 32
#: Characters in a session id: ``SESSION_ID_BYTES`` in unpadded URL-safe base64.
SESSION_ID_LENGTH = 43
# The last of 43 characters carries 4 bits (and 2 zero bits): only these 16 characters can end a real id.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_MAX_USER_CHARS = 256


def new_session_id() -> str:
    """A fresh session id: 256 bits from :mod:`secrets`, 43 URL- and cookie-safe characters."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def rotated_id(sid: str) -> str:
    """A fresh id for the session now under ``sid``: the characters that pick its slot, then fresh random ones."""
    return sid[:SESSION_SLOT_CHARS] + new_session_id()[SESSION_SLOT_CHARS:]


def is_session_id(text: object) -> bool:
    """Whether ``text`` has the exact form of an id from :func:`new_session_id` (no server call)."""
    return type(text) is str and len(text) == SESSION_ID_LENGTH and _ID_RE.fullmatch(text) is not None


def fingerprint(sid: str) -> str:
    """A short hash of a session id, for logs (an id is a credential: never log it)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:10]


def owner_token(user_id: object) -> str:
    """How a user id appears in key names and in the ``m:u`` field: its text, percent-encoded."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int, uuid.UUID)):
        raise InvalidKeyError(
            f"a session's user id must be a str, an int or a UUID, got {type(user_id).__name__}: pass user_id= "
            "explicitly, or store a plain id under the store's user_key"
        )
    text = str(user_id)
    if not text or len(text) > _MAX_USER_CHARS:
        raise InvalidKeyError(f"a session's user id must be 1-{_MAX_USER_CHARS} characters, got {len(text)}")
    return quote(text, safe="")
