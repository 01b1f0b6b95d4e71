"""A model remote for cache tests: bytes per key, counted fetches, optional gates and faults."""

from __future__ import annotations

import os

import trio


class ModelRemote:
    """What the share holds; `fetch(key)` gives the cache's fetch function for one file."""

    def __init__(self) -> None:
        self.files: dict[int, bytearray] = {}
        self.calls: list[tuple[int, int, int]] = []  # (key, offset, length)
        self.gate: trio.Event | None = None  # when set, fetches wait for it
        self.fail: BaseException | None = None  # when set, fetches raise it (after the gate)

    def put(self, key: int, data: bytes) -> None:
        self.files[key] = bytearray(data)

    def fetch(self, key: int):
        async def fetch(offset: int, length: int) -> bytes:
            assert length > 0, "the cache must not fetch empty ranges"
            self.calls.append((key, offset, length))
            await trio.lowlevel.checkpoint()
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            return bytes(self.files.get(key, b"")[offset : offset + length])

        return fetch

    def fetched_blocks(self, key: int, block_size: int) -> list[int]:
        out = []
        for k, off, n in self.calls:
            if k == key:
                out.extend(range(off // block_size, (off + n + block_size - 1) // block_size))
        return out


def allocated(cache) -> int:
    """Bytes really allocated on disk by the cache's data files (st_blocks * 512)."""
    total = 0
    for root, _dirs, names in os.walk(cache.directory / "data"):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def du(path) -> int:
    """What `du -s --block-size=1 PATH` counts: allocated bytes of every file and directory
    under PATH, PATH itself included (each directory once, as the root of its walk step)."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for p in [root, *(os.path.join(root, n) for n in names)]:
            try:
                total += os.lstat(p).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
