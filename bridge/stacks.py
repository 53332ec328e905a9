"""Where each asyncio task waits: for the one log line of a shutdown that overran its budget.

``Task.get_stack`` gives one frame for a suspended coroutine; following ``cr_await``
down the chain names every coroutine on the way to the future it waits for.
"""

from __future__ import annotations

import asyncio
from typing import Any

MAX_DEPTH = 24


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The task's coroutines, outermost first, as "name (file:line)"."""
    chain: list[str] = []
    step: Any = task.get_coro()
    while step is not None and len(chain) < MAX_DEPTH:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            chain.append(type(step).__name__)  # the future (or other awaitable) at the bottom
            break
        where = "/".join(frame.f_code.co_filename.rsplit("/", 2)[-2:])
        chain.append(f"{frame.f_code.co_name} ({where}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return chain


def all_task_stacks() -> dict[str, list[str]]:
    return {task.get_name(): awaiting(task) for task in asyncio.all_tasks()}
