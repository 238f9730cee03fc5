"""Hand CPU-bound calls to worker threads in groups rather than one future per call.

``loop.run_in_executor`` per request costs, on the event loop alone, a concurrent future, its
wrapping asyncio future, the chained callbacks and a self-pipe write to wake the loop: tens of
microseconds under load, about as much as the Python half of verifying a Rekor entry. A
``Handoff`` collects the calls made during one iteration of the loop and sends them to the
executor in chunks, so those costs are paid once per chunk. The work still runs in threads, so
whatever releases the GIL (signature verification in OpenSSL) still runs beside the loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar, cast

__all__ = ["Handoff"]

_A = TypeVar("_A")
_R = TypeVar("_R")

_Outcome = tuple[bool, object]
"""(True, result) or (False, the exception the call raised)."""


class Handoff(Generic[_A, _R]):
    """``await handoff(arg)`` is ``fn(arg)`` run on ``executor``, grouped with other calls.

    Each call's exception is raised to its own caller only. A chunk holds at most ``chunk``
    calls, so a burst still spreads over several threads: one thread per chunk. A call whose
    argument ``inline`` accepts runs at once on the loop instead: work about as cheap as the
    hand-off itself gains nothing from a thread.
    """

    __slots__ = ("_chunk", "_executor", "_fn", "_inline", "_scheduled", "_waiting")

    def __init__(
        self,
        fn: Callable[[_A], _R],
        executor: Executor | None = None,
        chunk: int = 16,
        *,
        inline: Callable[[_A], bool] | None = None,
    ):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self._fn = fn
        self._executor = executor
        self._chunk = chunk
        self._inline = inline
        self._waiting: list[tuple[_A, asyncio.Future[_R]]] = []
        self._scheduled = False

    async def __call__(self, arg: _A) -> _R:
        if self._inline is not None and self._inline(arg):
            return self._fn(arg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._waiting.append((arg, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._chunk):
            group = waiting[start : start + self._chunk]
            try:
                done = loop.run_in_executor(self._executor, self._run, [arg for arg, _ in group])
            except RuntimeError as exc:  # the executor was shut down: nobody would answer
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            done.add_done_callback(functools.partial(_settle, group))

    def _run(self, args: list[_A]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for arg in args:
            try:
                outcomes.append((True, self._fn(arg)))
            except Exception as exc:  # handed to that call's own awaiter
                outcomes.append((False, exc))
        return outcomes


def _settle(
    group: list[tuple[_A, asyncio.Future[_R]]], outcome: asyncio.Future[list[_Outcome]]
) -> None:
    # Only an executor shut down under us cancels or fails a whole chunk: every waiter alike.
    failed = None if outcome.cancelled() else outcome.exception()
    if outcome.cancelled() or failed is not None:
        for _, future in group:
            if future.done():
                continue
            if failed is None:
                future.cancel()
            else:
                future.set_exception(failed)
        return
    for (_, future), (ok, value) in zip(group, outcome.result(), strict=True):
        if future.done():  # its caller went away (a cancelled request)
            continue
        if ok:
            future.set_result(cast(_R, value))
        else:
            future.set_exception(cast(Exception, value))
