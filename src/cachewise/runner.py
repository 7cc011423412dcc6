"""Flows and the shells that run them: one way to write an operation once for ``def`` and ``async def`` callers.

A *flow* is a generator that makes every decision and yields each piece of I/O as a *step* (a small frozen
dataclass); a shell runs the step and sends its reply back in (or throws its exception in).  :func:`run` runs a
flow with blocking I/O, :func:`arun` with asyncio; they differ only in ``await``.  The one step every component
uses is :class:`Send` (a command through the :class:`~cachewise.executor.Executor`); the read-through engine adds
its own (loads, waits, local flights: :mod:`cachewise.engine.steps`) through ``handle``.  This is the design of
``h11`` and ``httpcore``: the protocol logic has no I/O, so it exists once and is tested without a server, by
feeding a flow the replies a server would give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .executor import Executor, Failed
from .stats import Counters
from .transport.command import Command

__all__ = ["Flow", "Send", "Stepper", "arun", "run"]

T = TypeVar("T")
#: A flow: yields steps, receives each step's reply, returns the operation's result.
Flow = Generator[Any, Any, T]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``command`` through the executor.  Reply: the server's reply (a list for a command of several parts); a
    server failure (already counted and logged) is thrown into the flow instead."""

    command: Command
    scope: Counters | None = None


class Stepper:
    """One flow being run: advances it with the last step's reply or exception (shared by both shells)."""

    __slots__ = ("error", "flow", "reply", "value")

    def __init__(self, flow: Flow[Any]) -> None:
        self.flow = flow
        self.reply: Any = None
        self.error: BaseException | None = None
        self.value: Any = None

    def next(self) -> Any:
        """The flow's next step, or None when it has returned (its result is then :attr:`value`)."""
        try:
            step = self.flow.send(self.reply) if self.error is None else self.flow.throw(self.error)
        except StopIteration as done:
            self.value = done.value
            return None
        self.reply, self.error = None, None
        return step

    def answer(self, reply: Any) -> None:
        if type(reply) is Failed:
            self.error = reply.error
        else:
            self.reply = reply


def _other(step: Any) -> Any:
    raise TypeError(f"no handler for the step {step!r}")


async def _aother(step: Any) -> Any:
    return _other(step)


def run(executor: Executor, flow: Flow[T], handle: Callable[[Any], Any] = _other) -> T:
    """Run ``flow`` with blocking I/O; steps other than :class:`Send` go to ``handle``."""
    stepper = Stepper(flow)
    while (step := stepper.next()) is not None:
        try:
            stepper.answer(executor.attempt(step.command, step.scope) if type(step) is Send else handle(step))
        except BaseException as exc:
            stepper.error = exc
    return stepper.value  # type: ignore[no-any-return]


async def arun(executor: Executor, flow: Flow[T], handle: Callable[[Any], Awaitable[Any]] = _aother) -> T:
    """Run ``flow`` with asyncio; steps other than :class:`Send` go to ``handle``."""
    stepper = Stepper(flow)
    while (step := stepper.next()) is not None:
        try:
            stepper.answer(await (executor.aattempt(step.command, step.scope) if type(step) is Send else handle(step)))
        except BaseException as exc:
            stepper.error = exc
    return stepper.value  # type: ignore[no-any-return]
