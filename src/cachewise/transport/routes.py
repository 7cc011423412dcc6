"""How one :class:`~cachewise.transport.command.Command` travels on a Cluster, without I/O: its parts grouped by node.

Each part goes to the primary of its keys' slot.  A part whose keys span several slots is one of the commands whose
keys are independent of each other — ``MGET`` (a read of an entry and its counters), ``DEL``/``UNLINK``/``EXISTS``,
or a script marked ``per_key`` (``counters.lua``, ``materialize.lua``) — and is split into one command per slot,
whose replies are put back together in key order, so the engine above never knows.  A :class:`Route` is computed
once per command and slot-map version and kept on the command (the hit path's read is memoised per key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.crc import key_slot

from . import resp
from .command import Command

__all__ = ["Piece", "Route", "merge", "route"]

#: How the replies of a split part are put back together: by key position ("list": ``MGET``; "columns": a script
#: answering one list per column, e.g. counters.lua's {values, lives}), or added ("sum": ``DEL``, ``UNLINK``...).
_PLAIN_SPLITS = {b"MGET": "list", b"DEL": "sum", b"UNLINK": "sum", b"EXISTS": "sum", b"TOUCH": "sum"}


class Piece:
    """What one node is sent: ``parts`` (as one ``payload``), and for each of their replies where it goes back:
    ``(part index, key positions or None for a whole part)``."""

    __slots__ = ("count", "node", "parts", "payload", "targets")

    def __init__(self, node: Any, parts: list[bytes] | None = None) -> None:
        self.node = node
        self.parts: list[bytes] = parts or []
        self.payload = b"".join(self.parts)
        self.count = len(self.parts)
        self.targets: list[tuple[int, tuple[int, ...] | None]] = []

    def add(self, part: bytes, target: tuple[int, tuple[int, ...] | None]) -> None:
        self.parts.append(part)
        self.targets.append(target)

    def seal(self) -> None:
        """Join the parts into the payload, once every part is added (not per part: a batch may have thousands)."""
        self.payload = b"".join(self.parts)
        self.count = len(self.parts)


class Route:
    """A command's pieces, one per node, and how each split part's replies merge (``merges[part] = kind``)."""

    __slots__ = ("epoch", "merges", "pieces", "scans", "sizes")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.pieces: list[Piece] = []
        self.merges: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        #: A ``SCAN`` part's place in the cluster-wide scan: ``scans[part] = (primary's index, how many primaries)``.
        self.scans: dict[int, tuple[int, int]] = {}


def _args(part: bytes) -> list[bytes]:
    """The arguments of one encoded command (the inverse of :func:`resp.command`)."""
    if not part.startswith(b"*"):
        raise ValueError("not an encoded command")
    end = part.index(b"\r\n")
    count, pos, args = int(part[1:end]), end + 2, []
    for _ in range(count):
        end = part.index(b"\r\n", pos)
        size = int(part[pos + 1 : end])
        args.append(part[end + 2 : end + 2 + size])
        pos = end + 4 + size
    return args


def _splitter(part: bytes, script: Any) -> tuple[str, Callable[[Sequence[str]], bytes]]:
    """How to split ``part`` by key: its merge kind and a builder of the same command on a subset of its keys."""
    args = _args(part)
    name = args[0].upper()
    if name in _PLAIN_SPLITS:
        return _PLAIN_SPLITS[name], lambda keys: resp.command(args[0], *keys)
    kind = getattr(script, "per_key", None)
    if name == b"EVALSHA" and kind:
        extra = args[3 + int(args[2]) :]
        return kind, lambda keys: resp.command(b"EVALSHA", args[1], len(keys), *keys, *extra)
    raise ValueError(
        f"the command {name.decode(errors='replace')} touches keys in several hash slots: on a Cluster every "
        "command's keys must share one slot (give them a {hash tag}), or be the independent keys of MGET, DEL or a "
        "per-key script"
    )


def route(
    command: Command,
    epoch: int,
    node_of: Callable[[int], Any],
    default: Callable[[], Any],
    primaries: Callable[[], Sequence[Any]] | None = None,
) -> Route:
    """Group ``command``'s parts by node (``node_of(slot)``; a part without keys goes to ``default()``, a ``SCAN``
    to the primary its cursor names, see :func:`_scan`)."""
    plan = Route(epoch)
    by_node: dict[Any, Piece] = {}

    def piece(node: Any) -> Piece:
        found = by_node.get(node)
        if found is None:
            found = by_node[node] = Piece(node)
            plan.pieces.append(found)
        return found

    for index, (part, keys, script) in enumerate(zip(command.parts, command.keys, command.scripts)):
        if not keys:
            if primaries is not None and _is_scan(part):
                node, part = _scan(plan, index, part, primaries())
                piece(node).add(part, (index, None))
            else:
                piece(default()).add(part, (index, None))
            continue
        slots = [key_slot(k.encode()) for k in keys]
        if all(s == slots[0] for s in slots):
            piece(node_of(slots[0])).add(part, (index, None))
            continue
        kind, build = _splitter(part, script)
        plan.merges[index] = kind
        plan.sizes[index] = len(keys)
        groups: dict[Any, list[int]] = {}
        for position, slot in enumerate(slots):
            groups.setdefault(node_of(slot), []).append(position)
        for node, positions in groups.items():
            # one command per slot: a node may own several of the slots, and a multi-key command needs one slot
            per_slot: dict[int, list[int]] = {}
            for position in positions:
                per_slot.setdefault(slots[position], []).append(position)
            for chosen in per_slot.values():
                piece(node).add(build([keys[p] for p in chosen]), (index, tuple(chosen)))
    # Nodes in one fixed order: a caller waiting for a free connection to one node while it holds another's never
    # waits on a caller doing the opposite.
    plan.pieces.sort(key=lambda each: str(getattr(each.node, "name", each.node)))
    for each in plan.pieces:
        each.seal()
    return plan


def _is_scan(part: bytes) -> bool:
    return part[part.index(b"\r\n") + 2 :].startswith(b"$4\r\nSCAN\r\n")


def _scan(plan: Route, index: int, part: bytes, nodes: Sequence[Any]) -> tuple[Any, bytes]:
    """A ``SCAN`` of the whole cluster, one primary after the other, under one cursor: ``node cursor * primaries +
    primary's index`` (0 to start and once every primary is done).  The primaries are taken in a fixed order (by
    name); a topology change during the scan may make it miss or repeat keys, as a rehash does on one server."""
    args = _args(part)
    count = len(nodes)
    cursor = int(args[1])
    at, node_cursor = cursor % count, cursor // count
    plan.scans[index] = (at, count)
    return nodes[at], resp.command(args[0], node_cursor, *args[2:])


def _scan_reply(at: int, count: int, reply: Any) -> Any:
    """A primary's ``SCAN`` reply with its cursor made the cluster-wide one."""
    if isinstance(reply, Exception):
        return reply
    node_cursor, keys = int(reply[0]), reply[1]
    if node_cursor:
        return [str(node_cursor * count + at).encode(), keys]
    return [str(at + 1 if at + 1 < count else 0).encode(), keys]


def merge(plan: Route, count: int, answers: list[list[Any]]) -> list[Any]:
    """The replies of the whole command, in part order, from each piece's replies (``answers[i]`` for
    ``plan.pieces[i]``).  An error reply of a sub-command becomes the reply of its part."""
    replies: list[Any] = [None] * count
    partial: dict[int, Any] = {}
    for piece, got in zip(plan.pieces, answers):
        for (index, positions), reply in zip(piece.targets, got):
            if positions is None:
                scan = plan.scans.get(index) if plan.scans else None
                replies[index] = reply if scan is None else _scan_reply(*scan, reply)
                continue
            kind = plan.merges[index]
            if isinstance(reply, Exception) or isinstance(partial.get(index), Exception):
                partial[index] = reply if isinstance(reply, Exception) else partial[index]
                continue
            if kind == "sum":
                partial[index] = partial.get(index, 0) + int(reply)
            elif kind == "list":
                merged = partial.setdefault(index, [None] * plan.sizes[index])
                for position, value in zip(positions, reply):
                    merged[position] = value
            else:  # columns
                columns = partial.setdefault(index, [[None] * plan.sizes[index] for _ in reply])
                for column, values in zip(columns, reply):
                    for position, value in zip(positions, values):
                        column[position] = value
    for index, value in partial.items():
        replies[index] = value
    return replies
