"""The emulator's two concurrency primitives: per-file locks and a share's snapshot gate.

Handlers run as trio tasks that may wait (worker threads for big writes and copies); these keep
two requests from interleaving their changes to one file, and a snapshot from freezing half a
write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio


@dataclass(slots=True)
class _Held:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0  # tasks holding or waiting for the lock


class KeyedLocks:
    """One trio.Lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, _Held] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _Held()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._locks.pop(key, None)


class WriteGate:
    """Content writes of a share run (partly in worker threads) under `writing()`; a snapshot
    takes `exclusive()`, which waits for writes in flight and holds new ones back, so the frozen
    copy never sees half a write."""

    def __init__(self) -> None:
        self.active = 0
        self.closed: trio.Event | None = None
        self.drained: trio.Event | None = None

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        while self.closed is not None:
            await self.closed.wait()
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if self.active == 0 and self.drained is not None:
                self.drained.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        while self.closed is not None:
            await self.closed.wait()
        closed = self.closed = trio.Event()
        try:
            while self.active:
                self.drained = trio.Event()
                await self.drained.wait()
            yield
        finally:
            self.closed = None
            self.drained = None
            closed.set()
