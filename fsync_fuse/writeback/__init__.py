"""Write-back: local changes reach the share in order, content once it is quiet (queue.py)."""

from __future__ import annotations

from fsync_fuse.writeback.dirty import DirtySet
from fsync_fuse.writeback.pacing import Pacing
from fsync_fuse.writeback.queue import WriteBack

__all__ = ["DirtySet", "Pacing", "WriteBack"]
