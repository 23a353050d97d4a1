"""Store work of async calls, run on a few threads of its own so the event loop never waits.

Reserving, settling and logging touch a SQLite file or a Redis server, and either can stall
(another process holds the file's write lock; Redis is frozen) for as long as its bound
(the spend log's ``busy_timeout``, Redis's ``TIMEOUT``). An async call hands that work to
:data:`STORE_THREADS` worker threads, not to asyncio's default executor, which the blocking
HTTP transports share: a queue of HTTP calls cannot delay a settle, nor a stalled store the
HTTP calls. The work is shielded: a task cancelled while it waits still has its reservation
settled or released, on the worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["STORE_THREADS", "off_loop"]

STORE_THREADS = 8
"""Worker threads for store work of async calls, per process."""

_T = TypeVar("_T")
_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    executor = _executor
    if executor is None:
        from concurrent.futures import ThreadPoolExecutor

        with _lock:
            executor = _executor
            if executor is None:
                executor = _executor = ThreadPoolExecutor(
                    STORE_THREADS, thread_name_prefix="moodlemate-store"
                )
    return executor


async def off_loop(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` on a store thread, in the caller's context (its spans, its
    context variables), awaited without blocking the loop."""
    import asyncio
    import contextvars

    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(_pool(), context.run, function, *args)
    return await asyncio.shield(future)
