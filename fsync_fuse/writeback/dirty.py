"""The dirty set: files whose local content is ahead of the share, and when each is due.

Persisted in the `dirty` LMDB database (ino → {"low": lowest size the file was truncated to
since the share last took a resize, "meta": mode/owner changed, "inflight": an upload began
changing the share and did not finish}); together with the cache's dirty blocks it is what
the next start re-queues. The rest of a file's state lives in memory only (`DirtyFile`).

A dirty file is due `delay` seconds after its last change (each write pushes the deadline
back), at once while draining or when dirty data fill half the cache (`Pacing.pressure`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from cache import BlockCache
from fsync_fuse.attrs import DIR, FILE, Inode
from fsync_fuse.deadlines import Deadlines
from fsync_fuse.namespace import Namespace
from fsync_fuse.writeback.pacing import Pacing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DirtyFile:
    """What the uploader knows of one dirty file."""

    #: lowest size truncated to since the share last took a resize (persisted)
    low: int | None = None
    #: mode or owner changed: the next upload sends the metadata too (persisted)
    meta: bool = False
    #: an upload began changing the share and did not finish (persisted): the share's ETag
    #: moved because of *us*, so the next conflict check must not count a change of the same
    #: file (same FileId) as another site's
    inflight: bool = False
    gen: int = 0  # bumped by every write, truncate or attribute change
    tgen: int = 0  # bumped by every truncate
    #: the generation the last finished upload started from (-1: none, or one is running)
    uploaded_gen: int = -1
    attempts: int = 0  # failed uploads in a row


class DirtySet:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        pacing: Pacing,
        delay: float,
    ) -> None:
        self.ns = ns
        self.cache = cache
        self.pacing = pacing
        self.delay = delay
        self.db = ns.env.open_db(b"dirty")
        self.files: dict[int, DirtyFile] = {}
        #: ino -> the lowest size truncated to since its running upload began (None: no
        #: truncate yet): what the next upload must resize down to once this one succeeded.
        #: Kept per running upload, which may outlive the file's entry in `files`.
        self.truncated_during: dict[int, int | None] = {}
        #: ino -> trio time its upload is due; setting an earlier deadline than the scheduler
        #: sleeps until wakes it, a later one (every write) costs O(1) and wakes nobody
        self.due = Deadlines(self._poke)
        self._wake = trio.Event()
        self._changed = trio.Event()
        #: called with an inode the set forgets (the write-back drops what it kept for it)
        self.on_forget: Callable[[int], object] = lambda ino: None
        #: the directories in `files`: their mtime (and metadata) is what goes to the share
        self.dirs: set[int] = set()
        with ns.env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                rec = json.loads(raw)
                ino = int.from_bytes(key, "big")
                self.files[ino] = DirtyFile(
                    low=rec.get("low"),
                    meta=bool(rec.get("meta")),
                    inflight=bool(rec.get("inflight")),
                )
                if rec.get("dir"):
                    self.dirs.add(ino)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.files)

    def is_dirty(self, ino: int) -> bool:
        return ino in self.files

    def get(self, ino: int) -> DirtyFile | None:
        return self.files.get(ino)

    def gen(self, ino: int) -> int:
        f = self.files.get(ino)
        return f.gen if f is not None else 0

    def tgen(self, ino: int) -> int:
        f = self.files.get(ino)
        return f.tgen if f is not None else 0

    def busy(self, ino: int) -> bool:
        """Local state of this inode is ahead of the share (listings must not overwrite it)."""
        return ino in self.files or self.ns.outbox.is_subject(ino)

    def dirty_blocks(self, ino: int) -> bool:
        return self.cache.dirty_bytes(ino) > 0

    def sync_remote_valid(self, rec: Inode) -> None:
        """Tell the cache how much of a clean file the share holds. Done lazily (on open,
        truncate, status, read-ahead) so a million listed files do not cost a million cache
        records; for a clean file it is always the share's size, dirty files are the cache's
        business."""
        if (
            rec.kind != DIR
            and rec.remote_size is not None
            and rec.ino not in self.files
            and not self.cache.dirty_bytes(rec.ino)
        ):
            if self.cache.remote_valid(rec.ino) != rec.remote_size:
                log.debug(
                    "inode %d: remote_valid %d -> %d",
                    rec.ino,
                    self.cache.remote_valid(rec.ino),
                    rec.remote_size,
                )
            self.cache.set_remote_valid(rec.ino, rec.remote_size)

    def nbytes(self) -> int:
        """Dirty bytes of the files in the set: the cache's running total (while mounted,
        a write marks its file dirty in the same step, so only files in the set have dirty
        blocks), so a status read is cheap however many files are dirty."""
        return self.cache.dirty_bytes()

    # ------------------------------------------------------------------ waking and waiting
    def _poke(self) -> None:
        self._wake.set()

    def poke(self) -> None:
        """Wake the upload scheduler (something may be due)."""
        self._poke()

    async def sleep_until_due(self) -> None:
        """The scheduler's sleep: until the earliest deadline, or an earlier one is set."""
        self._wake = trio.Event()
        deadline = self.due.waiting_until = self.due.next_deadline()
        with trio.move_on_at(deadline):
            await self._wake.wait()

    def notify(self) -> None:
        """The set or an upload's progress changed (drain and flush_now wait for this)."""
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    # ------------------------------------------------------------------ changes
    def persist(self, ino: int, *, now: bool = False) -> None:
        """Record the inode's entry: with the namespace's write-behind records (durable at the
        next commit point, like the data it describes), or at once."""
        f = self.files.get(ino)
        if f is None:
            return  # forgotten meanwhile: nothing to record
        rec: dict[str, object] = {"low": f.low, "meta": f.meta}
        if f.inflight:
            rec["inflight"] = True
        if ino in self.dirs:
            rec["dir"] = True
        self.ns.write_behind(self.db, ino.to_bytes(8, "big"), json.dumps(rec).encode())
        if now:
            self.ns.flush()

    def forget(self, ino: int) -> None:
        """Nothing of the inode is left to upload (uploaded, or deleted for good)."""
        self.dirs.discard(ino)
        self.files.pop(ino, None)
        self.due.pop(ino, None)
        self.ns.write_behind(self.db, ino.to_bytes(8, "big"), None)
        self.on_forget(ino)
        self.notify()

    def mark_dir(self, ino: int) -> None:
        """Entries of directory `ino` changed here: its mtime goes to the share when quiet."""
        if ino not in self.dirs:
            self.dirs.add(ino)
            self.files.pop(ino, None)  # recorded anew below, as a directory
        self.mark_dirty(ino)

    def mark_dirty(self, ino: int, *, truncated_to: int | None = None, meta: bool = False) -> None:
        """A write, truncate or attribute change happened: (re)start the quiet timer of this
        inode. A regular file's mode, owner and mtime travel with its upload (`meta`), not as
        queued operations, so `tar` setting them on each file it extracts costs nothing extra."""
        f = self.files.get(ino)
        new = f is None
        if f is None:
            f = self.files[ino] = DirtyFile()
        changed = new
        if meta and not f.meta:
            f.meta = changed = True
        if truncated_to is not None:
            low = truncated_to if f.low is None else min(f.low, truncated_to)
            changed = changed or low != f.low
            f.low = low
            f.tgen += 1
            if ino in self.truncated_during:
                during = self.truncated_during[ino]
                self.truncated_during[ino] = (
                    truncated_to if during is None else min(during, truncated_to)
                )
        if changed:
            # a low-water mark must not be lost once the cache dropped the truncated data
            self.persist(ino, now=truncated_to is not None)
            self.notify()
        f.gen += 1
        self.due[ino] = trio.current_time() + (
            0.0 if self.pacing.draining or self.pacing.pressure() else self.delay
        )  # wakes the scheduler only if this is now the earliest deadline

    def set_low(self, ino: int, low: int | None) -> None:
        f = self.files.get(ino)
        if f is not None and f.low != low:
            f.low = low
            self.persist(ino)

    def dropped(self, ino: int) -> None:
        """The inode was deleted for good: nothing of it will be uploaded."""
        self.forget(ino)

    def due_now(self) -> None:
        """Every dirty file is due at once (a drain began)."""
        now = trio.current_time()
        for ino in self.files:
            self.due[ino] = min(self.due.get(ino, 0.0), now)
        self._poke()

    def requeue_all(self) -> None:
        """At start: everything dirty (ours or the cache's) goes out as soon as it can.

        The cache may hold dirty blocks beyond the file's recorded size (a crash after the
        cache committed a write but before the namespace recorded the size it grew to):
        those lie above EOF, would never be uploaded nor cleaned, and the file would be
        re-queued forever. They are cut off here (cache/API.md: the owner truncates every
        dirty key to its committed size at start)."""
        for ino in self.cache.dirty_keys():
            rec = self.ns.get(ino)
            if rec is None or rec.kind != FILE:
                continue
            if any(o + n > rec.size for o, n in self.cache.dirty_ranges(ino)):
                log.info("inode %d: dropping cached writes beyond its size %d", ino, rec.size)
                self.cache.truncate(ino, rec.size)
        for ino in set(self.files) | set(self.cache.dirty_keys()):
            if ino not in self.files:
                self.files[ino] = DirtyFile()
                self.persist(ino)
            self.due[ino] = 0.0
