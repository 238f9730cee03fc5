"""Grouped hand-off of CPU-bound calls to worker threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from services.handoff import Handoff


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the hand-offs it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _square_or_refuse(x: int) -> tuple[int, str]:
    if x % 7 == 3:
        raise ValueError(f"refused {x}")
    return x * x, threading.current_thread().name


def test_each_caller_gets_its_own_result_or_exception_in_few_handoffs() -> None:
    executor = CountingExecutor()
    handoff = Handoff(_square_or_refuse, executor, chunk=16)

    async def run() -> list[object]:
        return await asyncio.gather(*(handoff(i) for i in range(50)), return_exceptions=True)

    try:
        results = asyncio.run(run())
    finally:
        executor.shutdown()
    for i, result in enumerate(results):
        if i % 7 == 3:
            assert isinstance(result, ValueError)
            assert str(result) == f"refused {i}"
        else:
            assert isinstance(result, tuple)
            assert result[0] == i * i
            assert result[1] != threading.current_thread().name  # ran off the loop
    assert executor.submitted == 4  # 50 calls in one loop iteration: chunks of 16


def test_calls_in_later_iterations_are_handed_off_again() -> None:
    executor = CountingExecutor()
    handoff = Handoff(_square_or_refuse, executor)

    async def run() -> list[int]:
        return [(await handoff(i))[0] for i in (1, 2, 4)]

    try:
        assert asyncio.run(run()) == [1, 4, 16]
    finally:
        executor.shutdown()
    assert executor.submitted == 3


def test_calls_inline_accepts_run_on_the_loop_and_raise_there() -> None:
    executor = CountingExecutor()
    handoff = Handoff(_square_or_refuse, executor, inline=lambda x: x < 10)

    async def run() -> list[object]:
        return await asyncio.gather(*(handoff(i) for i in (2, 3, 12)), return_exceptions=True)

    try:
        small, refused, large = asyncio.run(run())
    finally:
        executor.shutdown()
    assert small == (4, threading.current_thread().name)
    assert isinstance(refused, ValueError)
    assert str(refused) == "refused 3"
    assert isinstance(large, tuple)
    assert large[0] == 144
    assert large[1] != threading.current_thread().name
    assert executor.submitted == 1


def test_a_cancelled_caller_leaves_the_others_answered() -> None:
    gate = threading.Event()

    def slow(x: int) -> int:
        gate.wait(5)
        return x + 1

    executor = ThreadPoolExecutor(max_workers=2)
    handoff = Handoff(slow, executor)

    async def run() -> list[object]:
        tasks = [asyncio.create_task(handoff(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        first, second, third = asyncio.run(run())
    finally:
        executor.shutdown()
    assert (first, third) == (1, 3)
    assert isinstance(second, asyncio.CancelledError)


def test_a_shut_down_executor_fails_the_waiters_instead_of_hanging() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    handoff = Handoff(_square_or_refuse, executor)

    async def run() -> None:
        await asyncio.wait_for(handoff(1), 5)

    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(run())


def test_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Handoff(_square_or_refuse, chunk=0)
