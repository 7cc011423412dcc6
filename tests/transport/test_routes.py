"""Routing a command on a Cluster, without a server: parts grouped by the node of their slot, multi-slot reads and
per-key scripts split by slot and their replies put back in key order."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from cachewise.transport import resp
from cachewise.transport.command import Command
from cachewise.transport.routes import _args, merge, route
from cachewise.transport.scripts import Script


def node_of(slot: int) -> str:
    """Three nodes, as a 3-primary cluster splits the slots."""
    return "a" if slot < 5461 else "b" if slot < 10923 else "c"


def keys_on_three_nodes() -> list[str]:
    found: dict[str, str] = {}
    i = 0
    while len(found) < 3:
        key = f"k{i}"
        found.setdefault(node_of(key_slot(key.encode())), key)
        i += 1
    return [found["a"], found["b"], found["c"]]


def answer(plan: Any, reply_of: Any) -> list[list[Any]]:
    """What each node would answer: ``reply_of(args)`` per command of its piece."""
    from cachewise.transport.routes import _args

    return [[reply_of(_args(part)) for part in piece.parts] for piece in plan.pieces]


def test_a_read_over_three_slots_is_split_and_its_values_come_back_in_key_order() -> None:
    keys = keys_on_three_nodes()
    command = Command.plain("read", "MGET", *keys, keys=keys)
    plan = route(command, 0, node_of, lambda: "a")
    assert sorted(p.node for p in plan.pieces) == ["a", "b", "c"]
    replies = merge(plan, 1, answer(plan, lambda args: [b"v-" + k for k in args[1:]]))
    assert replies == [[f"v-{k}".encode() for k in keys]]


def test_parts_of_one_slot_go_whole_and_in_order() -> None:
    keys = keys_on_three_nodes()
    parts = [Command.plain("ttl", "PTTL", k, keys=[k]) for k in (keys[0], keys[1], keys[0])]
    command = Command.join("ttls", parts)
    plan = route(command, 0, node_of, lambda: "a")
    assert [(p.node, p.count) for p in plan.pieces] == [("a", 2), ("b", 1)]
    assert merge(plan, 3, answer(plan, lambda args: args[1])) == [k.encode() for k in (keys[0], keys[1], keys[0])]


def test_a_per_key_script_is_split_by_slot_and_its_columns_merged() -> None:
    script = Script("return {KEYS, KEYS}", "columns.lua", per_key="columns")
    keys = keys_on_three_nodes()
    command = Command.script("counters", script, keys, [100, "fresh"])
    plan = route(command, 0, node_of, lambda: "a")
    assert len(plan.pieces) == 3
    for piece in plan.pieces:  # each the same script on its own keys, with the same arguments
        assert piece.parts[0].endswith(resp.command(100, "fresh")[4:])

    def reply_of(args: list[bytes]) -> Any:
        count = int(args[2])
        return [list(args[3 : 3 + count]), [len(k) for k in args[3 : 3 + count]]]

    assert merge(plan, 1, answer(plan, reply_of)) == [[[k.encode() for k in keys], [len(k) for k in keys]]]


def test_deletes_over_several_slots_add_up_and_an_error_reply_stands_for_its_part() -> None:
    keys = keys_on_three_nodes()
    command = Command.join(
        "two",
        [Command.plain("clear", "UNLINK", *keys, keys=keys), Command.plain("get", "GET", keys[2], keys=[keys[2]])],
    )
    plan = route(command, 0, node_of, lambda: "a")
    assert merge(plan, 2, answer(plan, lambda args: 1 if args[0] == b"UNLINK" else b"x")) == [3, b"x"]
    error = RuntimeError("node down")
    replies = merge(plan, 2, answer(plan, lambda args: error if args[1] == keys[1].encode() else 1))
    assert replies[0] is error


def test_a_command_that_cannot_be_split_says_how_to_fix_the_keys() -> None:
    keys = keys_on_three_nodes()
    script = Script("return 1", "atomic.lua")
    with pytest.raises(ValueError, match="hash tag"):
        route(Command.script("atomic", script, keys, []), 0, node_of, lambda: "a")


def test_a_keyless_part_goes_to_the_default_node() -> None:
    plan = route(Command.plain("ping", "PING"), 0, node_of, lambda: "b")
    assert [p.node for p in plan.pieces] == ["b"]


def test_a_scan_visits_every_primary_in_turn_under_one_cursor() -> None:
    """``SCAN`` has no key: on a cluster it walks the primaries one after the other, and the cursor it answers
    names both the primary and that primary's cursor (0 once the last one is done)."""
    primaries = ["a", "b", "c"]
    node_replies = {"a": [b"17", b"0"], "b": [b"0"], "c": [b"0"]}  # a needs two calls, b and c one each
    cursor, visited, found = b"0", [], []
    while True:
        command = Command.plain("clear", "SCAN", cursor, "MATCH", "ns:*", "COUNT", 1000)
        plan = route(command, 0, node_of, lambda: "a", lambda: primaries)
        (piece,) = plan.pieces
        args = _args(piece.parts[0])
        assert args[2:] == [b"MATCH", b"ns:*", b"COUNT", b"1000"]
        visited.append((piece.node, int(args[1])))
        reply = [node_replies[piece.node].pop(0), [f"{piece.node}{len(found)}".encode()]]
        cursor, keys = merge(plan, 1, [[reply]])[0]
        found += keys
        if int(cursor) == 0:
            break
    assert visited == [("a", 0), ("a", 17), ("b", 0), ("c", 0)]
    assert found == [b"a0", b"a1", b"b2", b"c3"]
