"""Change detection: re-list directories so changes other sites made reach this mount.

Cost is bounded per interval, whatever the size of the share:

- **hot** directories (the kernel looked something up in them, listed or opened a file in
  them within `hot_window` seconds, 10 intervals by default; at most `max_hot`) are
  re-listed every interval, and so is the root;
- the **sweep** walks every other listed directory in inode order, `sweep_dirs` per interval,
  so a share of a million entries costs `sweep_dirs` listings per interval, not a million.

A directory never listed here has nothing cached to go stale: it is listed on first use.
Each re-listing goes through `Lister.refresh`, whose merge compares ETag, last-write time, size
and FileId, keeps entries with local changes as they are, drops clean cached blocks of changed
files and tells the kernel (fs.py `_merged`). `full_pass` (sync-now) re-lists every listed
directory, parents before children, and returns when done.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import trio

from fsync_fuse.listing import Lister
from fsync_fuse.namespace import ROOT, FsError, Namespace
from remote.base import RemoteError

log = logging.getLogger(__name__)


class Poller:
    def __init__(
        self,
        *,
        ns: Namespace,
        lister: Lister,
        interval: float = 30.0,
        hot_window: float | None = None,
        max_hot: int = 256,
        sweep_dirs: int = 16,
        sweep_scan: int = 20000,
        parallel: int = 4,
    ) -> None:
        self.ns = ns
        self.lister = lister
        self.interval = interval
        self.hot_window = hot_window if hot_window is not None else 10 * interval
        self.max_hot = max_hot
        self.sweep_dirs = sweep_dirs
        self.sweep_scan = sweep_scan
        self._limiter = trio.CapacityLimiter(parallel)
        self._hot: OrderedDict[int, float] = OrderedDict()  # dir ino -> last use (trio time)
        self._cursor = 0  # the sweep's position in the inode table
        self._full_lock = trio.Lock()
        #: counters for status and tests: passes, directories listed
        self.stats: dict[str, float] = {"rounds": 0, "listed": 0, "full_passes": 0}

    # ------------------------------------------------------------------ feeding
    def used(self, dir_ino: int) -> None:
        """The kernel used this directory: poll it often for a while."""
        try:
            now = trio.current_time()
        except RuntimeError:
            return
        self._hot[dir_ino] = now
        self._hot.move_to_end(dir_ino)
        while len(self._hot) > self.max_hot:
            self._hot.popitem(last=False)

    def _hot_dirs(self) -> list[int]:
        cutoff = trio.current_time() - self.hot_window
        while self._hot:
            ino, t = next(iter(self._hot.items()))
            if t >= cutoff:
                break
            self._hot.popitem(last=False)
        return list(self._hot)

    # ------------------------------------------------------------------ the loop
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval <= 0:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.round()
            except (RemoteError, FsError) as exc:
                log.debug("poll round failed: %s", exc)
            except Exception:  # a background task never takes the mount down
                log.exception("poll round failed unexpectedly")

    async def round(self) -> None:
        """One interval's worth: every hot directory, then a slice of the sweep."""
        t0, listed0 = trio.current_time(), self.stats["listed"]
        hot = self._hot_dirs()
        found, nxt = self.ns.dirs_after(self._cursor, self.sweep_scan)
        sweep = [d for d in found if d not in self._hot]
        if len(sweep) > self.sweep_dirs:
            sweep = sweep[: self.sweep_dirs]
            self._cursor = sweep[-1]  # resume after the last one taken
        else:
            self._cursor = nxt  # 0: the table ended, start again next round
        await self._refresh_all(([ROOT] if ROOT not in hot else []) + hot + sweep)
        self.stats["rounds"] += 1
        self.stats["last_at"] = time.time()
        self.stats["last_seconds"] = trio.current_time() - t0
        self.stats["last_listed"] = self.stats["listed"] - listed0

    async def _refresh_all(self, dirs: list[int]) -> None:
        async def one(ino: int) -> None:
            async with self._limiter:
                rec = self.ns.get(ino)
                if rec is None or not rec.is_dir or not rec.listed_ns:
                    return
                try:
                    await self.lister.refresh(ino)
                    self.stats["listed"] += 1
                except (RemoteError, FsError) as exc:
                    log.debug("re-listing inode %d failed: %s", ino, exc)
                except Exception:  # one directory's failure must not stop the others
                    log.exception("re-listing inode %d failed unexpectedly", ino)

        async with trio.open_nursery() as nursery:
            for ino in dict.fromkeys(dirs):
                nursery.start_soon(one, ino)

    async def full_pass(self) -> int:
        """Re-list every directory that has a listing, level by level from the root (a
        parent's merge may remove or add children); returns how many were listed."""
        async with self._full_lock:
            count = 0
            level = [ROOT]
            while level:
                await self._refresh_all(level)
                count += len(level)
                nxt: list[int] = []
                for d in level:
                    nxt += [r.ino for r in self.ns.iter_children(d) if r.is_dir and r.listed_ns]
                level = nxt
            self.stats["full_passes"] += 1
            log.info("sync-now: re-listed %d directories", count)
            return count
