"""Pins: what stays local. A pinned file is recalled and never tiered; a pinned directory
pins everything in it and whatever is created or moved into it later, at any depth.

Explicit pins are recorded per entry (the `pins` LMDB database in the namespace's
environment: survives remounts); a file is *covered* when it or a directory above it is
pinned. The cache enforces it per file (BlockCache.pin: never evicted, counted against the
bound, refused with PinTooLarge when it would not fit, before anything is evicted); the
Recaller brings covered content local in the background. The two are kept in step here: on
pin and unpin, when the kernel adapter creates or moves an entry, when a listing brings new
entries into a covered directory, and at every start (`sweep`: a crash between recording a
pin and pinning the cache, or entries listed while the mount was down).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from cache import BlockCache, CacheFull, PinTooLarge, human_size
from fsync_fuse.attrs import FILE
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import MergeResult, Namespace
from fsync_fuse.recall import PINNED, Recaller
from remote.base import RemoteError

log = logging.getLogger(__name__)


class Pins:
    def __init__(
        self, *, ns: Namespace, cache: BlockCache, lister: Lister, recaller: Recaller
    ) -> None:
        self.ns, self.cache, self.lister, self.recaller = ns, cache, lister, recaller
        self.db = ns.env.open_db(b"pins")
        with ns.env.begin(db=self.db) as txn:
            self.explicit: set[int] = {int.from_bytes(k, "big") for k, _ in txn.cursor()}

    # ------------------------------------------------------------------ queries
    def covered(self, ino: int) -> bool:
        """Pinned itself or through a directory above it."""
        chain = self.ns.chain(ino) or [ino]
        return any(i in self.explicit for i in chain)

    def state(self, ino: int) -> tuple[bool, bool]:
        """(pinned, inherited): inherited when only a directory above it is pinned."""
        chain = self.ns.chain(ino) or [ino]
        above = any(i in self.explicit for i in chain[1:])
        own = ino in self.explicit
        return own or above, above and not own

    # ------------------------------------------------------------------ commands
    async def pin(self, ino: int) -> int:
        """Pin a file or a directory (everything below it, listed from the share where this
        mount never listed it). Returns how many files were newly pinned. PinTooLarge (and
        nothing pinned) when their content would not fit beside what is pinned already."""
        rec = self.ns.must(ino)
        files = [rec.ino] if rec.kind == FILE else [r async for r in self._files_below(ino)]
        todo: list[tuple[int, int]] = []  # (ino, size) of files not pinned yet
        for f in files:
            info = self.cache.file_info(f)
            frec = self.ns.get(f)
            if frec is not None and not (info is not None and info.pinned):
                todo.append((f, frec.size))
        done: list[int] = []
        try:
            for f, size in todo:
                self.cache.pin(f, size)
                done.append(f)
        except PinTooLarge as exc:
            for f in done:  # nothing stays pinned by a refused pin
                self.cache.unpin(f)
            if rec.kind == FILE:
                raise
            total = sum(size for _f, size in todo)
            raise PinTooLarge(
                f"cannot pin {self.ns.path(ino)!r}: its files hold {human_size(total)} not "
                f"pinned yet, {human_size(self.cache.pinned_bytes())} is pinned already and pinned data may "
                f"use {human_size(exc.available)} of the cache",
                pinned=self.cache.pinned_bytes(),
                available=exc.available,
                asked=total,
            ) from None
        self._record(ino, True)
        for f in done:
            self.recaller.queue(f, PINNED)
        log.info("pinned %r (%d files newly pinned)", self.ns.path(ino), len(done))
        return len(done)

    async def unpin(self, ino: int) -> int:
        """Remove the pin of a file or directory; what is still covered by a directory
        above stays pinned. Returns how many files were unpinned."""
        rec = self.ns.must(ino)
        self._record(ino, False)
        if rec.kind == FILE:
            files = [ino]
        else:
            files = [f async for f in self._files_below(ino, list_missing=False)]
        count = 0
        for f in files:
            if not self.covered(f):
                self.cache.unpin(f)
                count += 1
        log.info("unpinned %r (%d files)", self.ns.path(ino), count)
        return count

    def _record(self, ino: int, on: bool) -> None:
        key = ino.to_bytes(8, "big")
        with self.ns.env.begin(write=True, db=self.db) as txn:
            if on:
                txn.put(key, b"")
            else:
                txn.delete(key)
        (self.explicit.add if on else self.explicit.discard)(ino)

    async def _files_below(self, ino: int, *, list_missing: bool = True) -> AsyncIterator[int]:
        """Every file below directory `ino` (directories this mount never listed are listed
        first when `list_missing`)."""
        stack = [ino]
        while stack:
            d = stack.pop()
            drec = self.ns.get(d)
            if drec is None:
                continue
            if list_missing and not drec.listed_ns:
                try:
                    await self.lister.ensure(d, refresh_stale=False)
                except (RemoteError, OSError) as exc:
                    log.warning(
                        "pin: cannot list %r (%s): what it holds is pinned when listed",
                        self.ns.path(d),
                        exc,
                    )
                    continue
            for child in self.ns.iter_children(d):
                if child.is_dir:
                    stack.append(child.ino)
                elif child.kind == FILE:
                    yield child.ino

    # ------------------------------------------------------------------ keeping in step
    def created(self, ino: int) -> None:
        """The kernel adapter created `ino` (its content is local and dirty): pinned when
        created in a covered directory."""
        rec = self.ns.get(ino)
        if rec is not None and rec.kind == FILE and self.covered(ino):
            self._pin_quietly(ino, rec.size)

    async def moved(self, ino: int) -> None:
        """`ino` was renamed or moved: what is below it follows the pins of its new place."""
        rec = self.ns.get(ino)
        if rec is None:
            return
        files = (
            [ino]
            if rec.kind == FILE
            else [f async for f in self._files_below(ino, list_missing=False)]
        )
        for f in files:
            frec = self.ns.get(f)
            if frec is None:
                continue
            if self.covered(f):
                if self._pin_quietly(f, frec.size):
                    self.recaller.queue(f, PINNED)
            else:
                self.cache.unpin(f)

    def listed(self, dir_ino: int, res: MergeResult) -> None:
        """A listing brought entries into `dir_ino` (merge_listing): covered files are pinned
        and recalled, new directories are walked by the next `sweep`."""
        if not self.explicit or not (res.added or res.moved_in or res.changed):
            return
        if not self.covered(dir_ino):
            return
        inos = [*res.added, *(i for _p, _n, i in res.moved_in), *(r.ino for r in res.changed)]
        for ino in inos:
            rec = self.ns.get(ino)
            if rec is not None and rec.kind == FILE and self._pin_quietly(ino, rec.size):
                self.recaller.queue(ino, PINNED)

    async def sweep(self) -> None:
        """At start: everything covered is pinned in the cache and queued for recall."""
        for ino in sorted(self.explicit):
            rec = self.ns.get(ino)
            if rec is None or rec.parent == 0 and ino != 1:
                self._record(ino, False)  # the entry is gone
                continue
            files = [ino] if rec.kind == FILE else [f async for f in self._files_below(ino)]
            for f in files:
                frec = self.ns.get(f)
                if frec is not None and self._pin_quietly(f, frec.size):
                    self.recaller.queue(f, PINNED)

    def _pin_quietly(self, ino: int, size: int) -> bool:
        """Pin in the cache; a pin that does not fit is logged (the user asked for the
        directory, the new file arrived later). True when pinned."""
        try:
            self.cache.pin(ino, size)
        except CacheFull as exc:
            log.warning("%r stays unpinned: %s", self.ns.path(ino), exc)
            return False
        return True
