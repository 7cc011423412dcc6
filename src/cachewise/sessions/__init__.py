"""Server-side sessions: :class:`SessionStore` (``session_store.py``), its ids (``ids.py``), how their data is
stored (``codec.py``), and the Lua scripts that keep each step atomic."""

from ..errors import SessionDataError
from .ids import SESSION_ID_BYTES, is_session_id, new_session_id
from .session_store import Session, SessionStore

__all__ = ["SESSION_ID_BYTES", "Session", "SessionDataError", "SessionStore", "is_session_id", "new_session_id"]
