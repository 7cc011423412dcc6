"""Server-side sessions: :class:`SessionStore` (``store.py``) and the Lua scripts that keep each step atomic."""

from .store import SESSION_ID_BYTES, Session, SessionDataError, SessionStore, is_session_id, new_session_id

__all__ = ["SESSION_ID_BYTES", "Session", "SessionDataError", "SessionStore", "is_session_id", "new_session_id"]
