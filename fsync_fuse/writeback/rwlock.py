"""The write-back's reader/writer lock: uploads share it, renames and removals take it alone.

An upload's remote calls use a share path computed under the shared side; the operation
worker applies a rename or removal (which changes such paths) under the exclusive side, so a
path can never change in the middle of a call that uses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


class RWLock:
    """Many shared holders or one exclusive holder; a waiting exclusive blocks new shared ones
    (so a stream of uploads cannot starve the worker)."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while self._writer or self._writers_waiting:
            await self._changed.wait()
        self._readers += 1
        try:
            yield
        finally:
            self._readers -= 1
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._writers_waiting += 1
        try:
            while self._writer or self._readers:
                await self._changed.wait()
        finally:
            self._writers_waiting -= 1
        self._writer = True
        try:
            yield
        finally:
            self._writer = False
            self._notify()
