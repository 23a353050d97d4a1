"""Connection pools that a forked child must not share with its parent.

A pre-forking server's workers, or multiprocessing with fork, inherit the parent's pooled
sockets: two processes reading one connection take each other's replies. Each pool
registers here, and in a forked child its ``after_fork()`` drops what it inherited, so the
child opens connections of its own and the parent keeps its own.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "drop_after_fork"]


class ForkAware(Protocol):
    def after_fork(self) -> None: ...


_LIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def drop_after_fork(pools: ForkAware) -> None:
    """Call ``pools.after_fork()`` in every child forked from now on (held weakly)."""
    _LIVE.add(pools)


def _in_child() -> None:
    for pools in list(_LIVE):
        pools.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
