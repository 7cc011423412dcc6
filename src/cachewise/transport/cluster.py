"""Redis/Valkey Cluster: redis-py's own cluster client for the topology, the package's commands routed by slot.

:class:`ClusterConnection` has the surface of :class:`~cachewise.transport.connection.Connection` that the rest of
the package uses (``send``/``asend`` for the :class:`~cachewise.executor.Executor`, ``sync``, ``notifier``,
``breaker``...).  The slot map is redis-py's (:class:`redis.cluster.RedisCluster`'s nodes manager, which discovers
the topology from the seed nodes); each command is split into one piece per node (:mod:`cachewise.transport.routes`),
every piece is written before any reply is read, so a command costs one round trip of wall time however many nodes
it touches.  ``MOVED`` updates the slot map and resends the part there, ``ASK`` resends it behind ``ASKING``,
``TRYAGAIN`` waits a moment and resends; a node that does not answer makes the call fail (the executor fails open)
and the slot map is read again before the next call, which is how a failover is followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..breaker import CircuitBreaker
from .command import Command
from .connection import aread_replies, read_replies, tracking_factory
from .notify import FillNotifier
from .pool import LeanPool
from .routes import Piece, Route, merge, route
from .urls import ServerAddress, redact

__all__ = ["ClusterConnection"]

_ASKING = b"*1\r\n$6\r\nASKING\r\n"
#: Error replies followed up here rather than handed back.
_REDIRECTIONS = (MovedError, AskError, TryAgainError, NoScriptError)
#: Redirections followed for one part before its reply is left as the error.
_REDIRECTS = 3
#: The slot map is read again at most this often (seconds) after a node failed to answer.
_REFRESH_EVERY = 0.2


class ClusterConnection:
    """The clients of one Redis Cluster (``redis+cluster://`` / ``rediss+cluster://`` / ``embedded+cluster://``)."""

    def __init__(self, address: ServerAddress, options: Any, seeds: list[tuple[str, int]], *, server: Any = None):
        self.address = address
        self.options = options
        #: The embedded cluster this connection started or joined (``embedded+cluster://``), else None.
        self.server = server
        kwargs = options.pool_kwargs()
        kwargs.pop("max_connections", None)
        kwargs.pop("timeout", None)
        kwargs.pop("retry", None)
        kwargs.pop("health_check_interval", None)
        self._kwargs = {**kwargs, **address.params}
        self.sync: RedisCluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],  # type: ignore[no-untyped-call]
            require_full_coverage=False,
            **self._kwargs,
        )
        self._nodes = self.sync.nodes_manager
        self.breaker = CircuitBreaker(options.breaker_threshold, options.breaker_reset, name=redact(address.url))
        self._epoch = 0
        self._stale = False
        self._refreshed_at = 0.0
        self._lock = threading.Lock()
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, list[Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._abounds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._notifier: FillNotifier | None = None
        #: Per node (by name): the lean pool of the connections this package sends on.
        self._lean: dict[str, LeanPool] = {}
        self.closed = False
        #: Whether fills are announced on sharded pub/sub (``SPUBLISH``: Redis 7 and Valkey have it); a cluster of
        #: older servers gets the classic channel.  Unknown (no node answered yet): assumed so.
        self.sharded_pubsub = _has_sharded_pubsub(self.sync)

    # -- topology ---------------------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.address.url

    def _route(self, command: Command) -> Route:
        if self._stale:
            self._refresh()
        plan: Route | None = command.route
        if plan is None or plan.epoch != self._epoch:
            nodes = self._nodes
            plan = route(command, self._epoch, nodes.get_node_from_slot, lambda: nodes.default_node, self._primaries)
            command.route = plan
        return plan

    def _primaries(self) -> list[ClusterNode]:
        """The primaries, in a fixed order (a cluster-wide ``SCAN`` visits them one after the other)."""
        return sorted(self.sync.get_primaries(), key=lambda node: node.name)  # type: ignore[no-untyped-call]

    def tracking_links(self, protocol: int) -> list[tuple[str, Callable[[], Any]]]:
        """One invalidation link per primary for a local tier (:mod:`cachewise.local.tracking`): the node's name,
        and a factory of unconnected redis-py connections to it."""
        if self._stale:
            self._refresh()
        return [
            (node.name, tracking_factory(node.redis_connection.connection_pool, protocol, self.options.timeout))
            for node in self._primaries()
        ]

    def _refresh(self) -> None:
        """Read the slot map again (after a node failed to answer: it may have failed over)."""
        with self._lock:
            if not self._stale or time.monotonic() - self._refreshed_at < _REFRESH_EVERY:
                return
            self._refreshed_at = time.monotonic()
            try:
                self._nodes.initialize()
            except Exception:  # every seed down: keep the old map, try again on a later call
                return
            self._stale = False
            self._epoch += 1

    def _moved(self, error: MovedError) -> None:
        with self._lock:
            try:
                self._nodes.move_slot(error)
            except Exception:
                self._stale = True
            self._epoch += 1

    def _node_failed(self) -> None:
        self._stale = True

    # -- sync ---------------------------------------------------------------------------------------------------
    def send(self, command: Command) -> list[Any]:
        """Every part of ``command`` sent to its node, the replies in part order (error replies in place)."""
        plan = self._route(command)
        if len(plan.pieces) == 1 and not plan.merges:
            answers = [self._fix(command, plan.pieces[0], self._exchange([plan.pieces[0]])[0])]
        else:
            answers = [self._fix(command, p, got) for p, got in zip(plan.pieces, self._exchange(plan.pieces))]
        return merge(plan, command.count, answers)

    def _exchange(self, pieces: list[Piece]) -> list[list[Any]]:
        """Write every piece to its node, then read each node's replies: one round trip of wall time."""
        taken: list[tuple[Any, Any]] = []
        try:
            for piece in pieces:
                pool = self._pool(piece.node)
                conn = pool.get()
                taken.append((pool, conn))
                conn.send_packed_command([piece.payload])
            answers = []
            for (_, conn), piece in zip(taken, pieces):
                answers.append(read_replies(conn, piece.count))
            return answers
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._node_failed()
            for _, conn in taken:
                conn.disconnect()
            raise
        except BaseException:
            for _, conn in taken:
                conn.disconnect()
            raise
        finally:
            for pool, conn in taken:
                pool.release(conn)

    def _pool(self, node: ClusterNode) -> LeanPool:
        """The node's lean pool: at most ``max_connections`` connections to it, a caller waiting up to
        ``pool_timeout`` for a free one (as on one server: a burst of 1000 threads must not open 1000 connections
        per node), made like redis-py's own connections to it."""
        pool = self._lean.get(node.name)
        if pool is None:
            with self._lock:
                pool = self._lean.get(node.name)
                if pool is None:
                    client = node.redis_connection or self.sync.get_redis_connection(node)
                    own = client.connection_pool
                    pool = LeanPool(
                        lambda: own.connection_class(**own.connection_kwargs),
                        self.options.max_connections,
                        self.options.pool_timeout,
                    )
                    self._lean[node.name] = pool
        return pool

    def _fix(self, command: Command, piece: Piece, got: list[Any]) -> list[Any]:
        """Follow redirections and load missing scripts for the replies of one piece."""
        for i, reply in enumerate(got):
            if isinstance(reply, ResponseError) and isinstance(
                reply, (MovedError, AskError, TryAgainError, NoScriptError)
            ):
                got[i] = self._again(command, piece, i, reply)
        return got

    def _again(self, command: Command, piece: Piece, i: int, reply: ResponseError) -> Any:
        part = piece.parts[i]
        index = piece.targets[i][0]
        node = piece.node
        for _ in range(_REDIRECTS):
            payload, skip = part, 0
            if isinstance(reply, MovedError):
                self._moved(reply)
                node = self._nodes.get_node_from_slot(reply.slot_id)
            elif isinstance(reply, AskError):
                node = self._nodes.get_node(host=reply.host, port=reply.port) or ClusterNode(reply.host, reply.port)  # type: ignore[no-untyped-call]
                payload, skip = _ASKING + part, 1
            elif isinstance(reply, TryAgainError):
                time.sleep(0.05)
            elif isinstance(reply, NoScriptError):
                script = command.scripts[index]
                if script is None:
                    return reply
                payload, skip = script.load + part, 1
            else:
                return reply
            extra = Piece(node, [payload] if not skip else [payload[: len(payload) - len(part)], part])
            reply = self._exchange([extra])[0][skip]
            if not isinstance(reply, _REDIRECTIONS):
                return reply
        return reply

    # -- asyncio ------------------------------------------------------------------------------------------------
    async def asend(self, command: Command) -> list[Any]:
        """Async :meth:`send` (connections per event loop and node)."""
        if self._stale:
            await asyncio.get_running_loop().run_in_executor(None, self._refresh)
        plan = self._route(command)
        answers = await self._aexchange(plan.pieces)
        fixed = []
        for piece, got in zip(plan.pieces, answers):
            if any(isinstance(r, _REDIRECTIONS) for r in got):
                got = await asyncio.get_running_loop().run_in_executor(None, self._fix, command, piece, got)
            fixed.append(got)
        return merge(plan, command.count, fixed)

    async def _aexchange(self, pieces: list[Piece]) -> list[list[Any]]:
        loop = asyncio.get_running_loop()
        idle = self._async.setdefault(loop, {})
        bound = self._abounds.get(loop)
        if bound is None:  # at most max_connections calls of this loop at once, as on one server
            bound = self._abounds[loop] = asyncio.Semaphore(self.options.max_connections)
        try:
            await asyncio.wait_for(bound.acquire(), self.options.pool_timeout)
        except asyncio.TimeoutError:
            raise RedisConnectionError(
                f"no free connection to the cluster within {self.options.pool_timeout:g} s (all "
                f"{self.options.max_connections} in use): raise max_connections or pool_timeout"
            ) from None
        try:
            return await self._aexchange_bound(idle, pieces)
        finally:
            bound.release()

    async def _aexchange_bound(self, idle: dict[str, list[Any]], pieces: list[Piece]) -> list[list[Any]]:
        taken: list[tuple[str, Any]] = []
        try:
            for piece in pieces:
                free = idle.setdefault(piece.node.name, [])
                conn = free.pop() if free else self._aconnection(piece.node)
                taken.append((piece.node.name, conn))
                await conn.send_packed_command([piece.payload])
            answers = []
            for (_, conn), piece in zip(taken, pieces):
                answers.append(await aread_replies(conn, piece.count))
            for name, conn in taken:
                idle[name].append(conn)
            return answers
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._node_failed()
            for _, conn in taken:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            raise
        except BaseException:
            for _, conn in taken:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            raise

    def _aconnection(self, node: ClusterNode) -> Any:
        kwargs = {k: v for k, v in self._kwargs.items() if k not in ("ssl", "protocol")}
        if self._kwargs.get("ssl"):
            return redis.asyncio.SSLConnection(host=node.host, port=node.port, protocol=2, **kwargs)
        return redis.asyncio.Connection(host=node.host, port=node.port, protocol=2, **kwargs)

    # -- pub/sub, life cycle ----------------------------------------------------------------------------------------
    @property
    def notifier(self) -> FillNotifier:
        """Wakes waiters on fills: on sharded pub/sub (each entry's shard channel, subscribed on the node of its
        slot, ``SSUBSCRIBE``) when the servers have it (:attr:`sharded_pubsub`), else on the namespace's classic
        channel on one node (a classic ``PUBLISH`` reaches every node of a cluster)."""
        with self._lock:
            if self._notifier is None:
                kwargs = {"protocol": 2, "socket_timeout": max(self.options.timeout, 1.0), **self.address.params}
                if self.sharded_pubsub:
                    seeds = [ClusterNode(node.host, node.port) for node in self.sync.get_primaries()]  # type: ignore[no-untyped-call]
                    self._notifier = FillNotifier(
                        self.address.url,
                        connect_timeout=self.options.connect_timeout,
                        client=lambda: RedisCluster(
                            startup_nodes=seeds,
                            require_full_coverage=False,
                            socket_connect_timeout=self.options.connect_timeout,
                            **kwargs,
                        ),
                        sharded=True,
                    )
                else:
                    node: ClusterNode = self._nodes.default_node or self.sync.get_primaries()[0]  # type: ignore[no-untyped-call]
                    scheme = "rediss" if self._kwargs.get("ssl") else "redis"
                    self._notifier = FillNotifier(
                        f"{scheme}://{node.host}:{node.port}",
                        connect_timeout=self.options.connect_timeout,
                        pool_kwargs=kwargs,
                    )
            return self._notifier

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pool in list(self._lean.values()):
            with contextlib.suppress(Exception):
                pool.close()
        with contextlib.suppress(Exception):
            self.sync.close()
        self._async.clear()
        if self._notifier is not None:
            self._notifier.close()
        if self.server is not None:
            from ..server.cluster import release_cluster

            release_cluster(self.server)
            self.server = None

    async def aclose_loop(self) -> None:
        idle = self._async.pop(asyncio.get_running_loop(), {})
        for conns in idle.values():
            for conn in conns:
                with contextlib.suppress(Exception):
                    await conn.disconnect()

    async def aclose(self) -> None:
        try:
            await self.aclose_loop()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"ClusterConnection({redact(self.address.url)!r})"


def _has_sharded_pubsub(client: RedisCluster) -> bool:
    try:
        version = str(client.info("server", target_nodes=RedisCluster.RANDOM).get("redis_version", "7"))
    except Exception:
        return True
    return int(version.split(".")[0]) >= 7
