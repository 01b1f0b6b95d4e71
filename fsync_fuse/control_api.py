"""What the control surface and the metrics read from the tiering parts, as Protocols.

The operator's surface (control_server.py, control_figures.py, metrics.py) reports on parts
built elsewhere: pins, the recall engine and the policies (fsync_fuse/pins.py, recall.py,
settings.py) and the cache's heat and pins (cache/tiering.py). It names here exactly what it
uses, so each side can change without the other as long as these hold; assembly.py hands the
real objects in (mypy checks them against these there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from cache.results import FileInfo, TierCandidate


class PinsLike(Protocol):
    """fsync_fuse/pins.py `Pins`."""

    async def pin(self, ino: int) -> int:
        """Pin a file or a directory (and what will be created in it); returns files newly
        pinned. Raises the cache's PinTooLarge (a CacheFull) before anything changes."""
        ...

    async def unpin(self, ino: int) -> int: ...

    def state(self, ino: int) -> tuple[bool, bool]:
        """(pinned, inherited from a directory above)."""
        ...


class RecallerLike(Protocol):
    """fsync_fuse/recall.py `Recaller`."""

    @property
    def stats(self) -> Mapping[str, int]:
        """recalls, recalled_files, recalled_bytes, failures, queued, max_parallel."""
        ...

    @property
    def running(self) -> int: ...

    async def recall(self, ino: int) -> int:
        """Bring the whole file local; bytes fetched. CacheFull when it would not stay."""
        ...

    def tier(self, ino: int) -> int:
        """Evict the clean content of a file now; bytes freed."""
        ...


class SettingsLike(Protocol):
    """fsync_fuse/settings.py `Settings`: the policies, settable at run time."""

    def values(self) -> Mapping[str, str]: ...

    def set(self, name: str, text: str) -> None:
        """ValueError with a one-line message for an unknown name or a bad value."""
        ...


class TieringCache(Protocol):
    """The cache's tiering side (cache/API.md, cache/tiering.py): heat, the date policy,
    what goes next. The cache's counters come from `BlockCache.stats()` (CacheStats)."""

    @property
    def tier_after(self) -> float | None: ...

    def file_info(self, key: int) -> FileInfo | None: ...

    def next_to_tier(self, n: int) -> Sequence[TierCandidate]: ...

    def pinned_bytes(self) -> int: ...


class FileCensus(Protocol):
    """Files by state, counted from the cache's records (not by walking the namespace):
    keys cached, local, partial, pinned."""

    def file_counts(self) -> Mapping[str, int]: ...


class UploadCounters(Protocol):
    """The uploader's counters (fsync_fuse/writeback/uploader.py `Uploader`)."""

    @property
    def stats(self) -> Mapping[str, int]:
        """files, bytes, failures since mount."""
        ...

    @property
    def in_flight(self) -> int:
        """File uploads running now."""
        ...


@runtime_checkable
class CallCounting(Protocol):
    """A remote that counts its calls (remote/azure_core.py `stats`)."""

    @property
    def stats(self) -> Mapping[str, Any]: ...
