"""Commands in the Redis protocol (RESP), built without I/O: for paths that send many commands in one write.

redis-py's pipeline encodes every argument of every command in Python and runs a reply callback per command; for a
batch of a thousand small reads that overhead is larger than the round trip itself.  These helpers build the bytes
a client sends (an array of bulk strings per command, the same in RESP2 and RESP3); :class:`Connection` sends them
as one write and reads the raw replies.
"""

from __future__ import annotations

__all__ = ["bulk", "command"]


def bulk(data: bytes) -> bytes:
    """One bulk string: ``$<len>\\r\\n<data>\\r\\n``."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


#: ``$<n>\r\n`` for the lengths most arguments have (an append is cheaper than formatting one per argument).
_HEADS = [b"$%d\r\n" % n for n in range(4096)]
_CRLF = b"\r\n"


def command(*parts: bytes | bytearray | str | int | float) -> bytes:
    """A whole command, e.g. ``command("SCRIPT", "LOAD", source)`` (``str`` as UTF-8, numbers as their ``str``)."""
    out = [b"*%d\r\n" % len(parts)]
    append = out.append
    heads = _HEADS
    for part in parts:
        if type(part) is str:
            data = part.encode()
        elif type(part) is bytes:
            data = part
        elif type(part) is int:
            data = b"%d" % part
        elif isinstance(part, (bytes, bytearray)):
            data = bytes(part)
        else:
            data = str(part).encode()
        size = len(data)
        append(heads[size] if size < 4096 else b"$%d\r\n" % size)
        append(data)
        append(_CRLF)
    return b"".join(out)
