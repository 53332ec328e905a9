"""The chain of coroutines a task waits in, for the shutdown_overdue line."""

from __future__ import annotations

import asyncio

from bridge.stacks import all_task_stacks, awaiting


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


async def test_the_chain_names_every_coroutine_down_to_the_future() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="waiter")
    await asyncio.sleep(0)
    chain = awaiting(task)
    names = [step.split(" ")[0] for step in chain]
    assert names[:3] == ["_outer", "_inner", "wait"], chain
    assert "test_stacks.py" in chain[0]
    assert all_task_stacks()["waiter"] == chain
    gate.set()
    await task
