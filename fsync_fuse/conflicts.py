"""Multi-site conflicts: local changes based on a version the share no longer holds.

Checked by the uploader before it sends a file's dirty ranges (one `stat`): the share's ETag
is compared with the ETag the local changes were based on (`Inode.etag`, the version last
listed, fetched or uploaded here). When they differ, both versions are kept, as Azure File
Sync does:

- the most recent write (local mtime vs the share's last-write time) keeps the name;
- the other is kept beside it as `<name>-<site>[-N].<ext>` (`site` = this mount's
  --site-name, the site that found the conflict; N counts up from 1 while the name is taken
  here or on the share);
- deleted on the share while changed here: the local file is created again.

Resolution turns the local file into a new share file: every block of it becomes dirty (read
through the cache; ranges never cached here can only come from the share's current version,
or zeros when it was deleted), its share identity is cleared (`remote_size`/`etag` None, so
the upload creates it and no later check compares against a stale base), and the upload is
restarted. Ours losing the name is a purely local rename (`Namespace.detach`, no queued op);
theirs losing it is a share rename. Every conflict is logged and counted (persisted in
`nsmeta`, shown in `user.fsync.status`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping

from cache import BlockCache
from fsync_fuse import names
from fsync_fuse.attrs import Inode
from fsync_fuse.namespace import Namespace
from remote import naming
from remote.base import AlreadyExists, LeaseConflict, NotFound, Remote, RemoteEntry

log = logging.getLogger(__name__)

CHUNK = 4 << 20
_KEY = b"conflicts"


conflict_name = names.conflict_name


def safe_site(site: str) -> str:
    """A site name usable inside a share name."""
    cleaned = re.sub(r'[\x00-\x1f"\\/:|<>*?. ]+', "_", site).strip("_")
    return cleaned[:40] or "site"


class Conflicts:
    def __init__(
        self,
        *,
        ns: Namespace,
        cache: BlockCache,
        remote: Remote,
        site: str,
        on_change: Callable[[int, str], None] = lambda parent, name: None,
    ) -> None:
        self.ns, self.cache, self.remote = ns, cache, remote
        self.site = safe_site(site)
        #: called with (parent ino, name that changed meaning) so the kernel and the listing
        #: learn about it
        self._on_change = on_change
        with ns.env.begin() as txn:
            raw = txn.get(_KEY, db=ns.db_meta)
        self.count = int(raw) if raw else 0
        #: ino -> (FileId, path) of the share's version this site is moving aside
        self._aside: dict[int, tuple[str | None, str]] = {}

    def announce(self, parent: int, name: str) -> None:
        """`name` in directory `parent` means another file now (a version moved aside)."""
        self._on_change(parent, name)

    def kept_beside(self, ino: int, path: str, where: str) -> None:
        """`place` kept ours under `where` instead of `path` (theirs has the name): the same
        rename here, nothing queued, and the kernel told."""
        if where != path:
            moved = self.ns.detach(ino, where.rpartition("/")[2])
            if moved is not None:
                self.announce(*moved)

    def _counted(self) -> None:
        self.count += 1
        self.ns.write_behind(self.ns.db_meta, _KEY, str(self.count).encode())

    async def check(
        self,
        ino: int,
        rec: Inode,
        path: str,
        before_change: Callable[[], Awaitable[None]] | None = None,
        inflight: bool = False,
    ) -> bool:
        """Before uploading `ino` at share `path`: True when a conflict was resolved and the
        upload must start again (the caller holds the shared lock with a settled path).
        `before_change` runs once a conflict is found, before the share is changed (the
        uploader releases its lease there). `inflight`: an earlier upload of this file
        changed the share and did not finish, so a new ETag of the same file is ours."""
        if rec.remote_size is None or rec.etag is None:
            return False  # not on the share yet, or already turned into a new file here
        try:
            entry = await self.remote.stat(path)
        except NotFound:
            entry = None
        if entry is not None and entry.etag == rec.etag:
            return False
        if inflight and entry is not None and not entry.is_dir and entry.file_id == rec.file_id:
            log.debug("%s: the share's version is our own interrupted upload", path)
            return False
        moving = self._aside.pop(ino, None)
        if entry is None and moving is not None and await self._still_aside(*moving):
            # our own earlier resolution moved theirs aside and its answer was lost: the
            # conflict was counted then; ours is now a new file under the name
            log.info("%s: the share's version was moved aside by this site already", path)
            self.ns.update(ino, remote_size=None, etag=None, file_id=None)
            return True
        self._counted()
        if before_change is not None:
            await before_change()
        if entry is None:
            log.warning(
                "conflict: %s was deleted on the share while changed here: creating it again",
                path,
            )
            await self._make_all_dirty(ino, rec, None)
            self.ns.update(ino, remote_size=None, etag=None, file_id=None)
            return True
        if entry.is_dir:
            # a directory took the name: ours moves aside
            theirs_newer = True
        else:
            theirs_newer = (entry.last_write_ns or 0) > rec.mtime_ns
        parent_path = path.rpartition("/")[0]
        aside = await self._free_name(rec.parent, parent_path, rec.name)
        await self._make_all_dirty(ino, rec, path if not entry.is_dir else None)
        self.ns.flush()
        await self.cache.commit_async()  # our whole version is durable before any rename
        if theirs_newer:
            log.warning(
                "conflict: %s changed on the share and here; the share's version (newer) "
                "keeps the name, this site's is kept as %r",
                path,
                aside,
            )
            moved = self.ns.detach(ino, aside, remote_size=None, etag=None, file_id=None)
            if moved is not None:
                self.announce(*moved)
        else:
            dst = f"{parent_path}/{aside}" if parent_path else aside
            log.warning(
                "conflict: %s changed on the share and here; this site's version (newer) "
                "keeps the name, the share's is kept as %r",
                path,
                aside,
            )
            # remembered until the rename's answer arrives: should it be lost, the retried
            # upload finds the name empty and must not count another conflict
            self._aside[ino] = (entry.file_id, dst)
            try:
                await self.remote.rename(path, dst, replace=False)
            except NotFound as exc:
                # Another site moved that version aside first (its own conflict copy, so it
                # is kept) and is placing its own: look again soon, as for a leased file.
                if not exc.retried:  # a resent rename may have been ours: keep the record
                    self._aside.pop(ino, None)
                raise LeaseConflict(
                    f"{path}: another site moved the share's version while this site was "
                    "keeping it; checking again"
                ) from None
            self._aside.pop(ino, None)
            self.ns.update(ino, remote_size=None, etag=None, file_id=None)
            self.announce(rec.parent, aside)
        return True

    async def place(
        self,
        ino: int,
        rec: Inode,
        tmp: str,
        path: str,
        *,
        movable: bool,
        ours: Mapping[str, tuple[int | None, int]] | None = None,
    ) -> tuple[RemoteEntry, str]:
        """Give our new file, created and filled at `tmp`, its name `path` without replacing
        anything. When the name is taken (a file or directory another site created since we
        listed), both are kept: the newer keeps the name, unless our inode may not move (a
        queued operation still refers to its path: `movable` False), then theirs moves.
        Returns ours (as the rename reported it) and the path it ended up at.

        `ours`: our own temporary files for this inode (FileId -> last-write time, size;
        newfiles.py), among them the one at `tmp`. The name held by one of them, unchanged,
        is an earlier attempt of this very placing whose answer was lost: this attempt's
        file replaces it, nothing is counted or kept twice. Our temporary file gone while
        the name holds one of ours: this rename already happened."""
        ours = ours or {}
        for _ in range(3):
            try:
                entry = await self.remote.rename(tmp, path, replace=False)
                return entry or await self.remote.stat(path), path
            except AlreadyExists:
                pass
            except NotFound:
                there = await self._stat_or_none(path)
                if there is None or there.is_dir or there.file_id not in ours:
                    raise
                log.debug("%s: our earlier rename of %s already gave it its name", path, tmp)
                return there, path
            theirs = await self._stat_or_none(path)
            if theirs is None:
                continue  # gone again meanwhile: take the name
            if self.is_ours(theirs, ours):
                log.info(
                    "%s: the name holds our own earlier attempt (its answer was lost); "
                    "replaced by this one",
                    path,
                )
                entry = await self.remote.rename(tmp, path, replace=True)
                return entry or await self.remote.stat(path), path
            if await self._same_file(ino, rec, tmp, theirs, path):
                # our own earlier create, replayed after a crash: nothing to keep twice
                await self.remote.delete_file(tmp)
                return theirs, path
            return await self._resolve_new(rec, tmp, path, theirs, movable)
        raise AlreadyExists(f"{path}: the name keeps being taken on the share")

    @staticmethod
    def is_ours(entry: RemoteEntry, ours: Mapping[str, tuple[int | None, int]]) -> bool:
        """Is `entry` one of our temporary files, as we left it (no other site wrote it)?"""
        if entry.is_dir or entry.file_id is None or entry.file_id not in ours:
            return False
        lw, size = ours[entry.file_id]
        return entry.size == size and (lw is None or entry.last_write_ns == lw)

    async def _still_aside(self, file_id: str | None, path: str) -> bool:
        there = await self._stat_or_none(path)
        return there is not None and file_id is not None and there.file_id == file_id

    async def _stat_or_none(self, path: str) -> RemoteEntry | None:
        try:
            return await self.remote.stat(path)
        except NotFound:
            return None

    async def _resolve_new(
        self, rec: Inode, tmp: str, path: str, theirs: RemoteEntry, movable: bool
    ) -> tuple[RemoteEntry, str]:
        self._counted()
        parent_path = path.rpartition("/")[0]
        aside = await self._free_name(rec.parent, parent_path, rec.name)
        aside_path = f"{parent_path}/{aside}" if parent_path else aside
        theirs_newer = theirs.is_dir or (theirs.last_write_ns or 0) > rec.mtime_ns
        if theirs_newer and movable:
            log.warning(
                "conflict: %s was created on the share too; the share's (newer) keeps the "
                "name, this site's is kept as %r",
                path,
                aside,
            )
            entry = await self.remote.rename(tmp, aside_path, replace=False)
            assert entry is not None
            return entry, aside_path
        log.warning(
            "conflict: %s was created on the share too; this site's %s keeps the name, the "
            "share's is kept as %r",
            path,
            "(newer)" if not theirs_newer else "(other operations wait on its name)",
            aside,
        )
        await self.remote.rename(path, aside_path, replace=False)
        self.announce(rec.parent, aside)
        entry = await self.remote.rename(tmp, path, replace=False)
        assert entry is not None
        return entry, path

    async def _same_file(
        self, ino: int, rec: Inode, tmp: str, theirs: RemoteEntry, path: str
    ) -> bool:
        """Is the file at `path` our own (an earlier attempt of this create that renamed it
        before a crash)? Only a small file of our size and mtime with our content is."""
        if theirs.is_dir or theirs.size != rec.size or rec.size > CHUNK:
            return False
        if theirs.last_write_ns != rec.mtime_ns:
            return False
        ours = await self.remote.read(tmp, 0, rec.size)
        return ours == await self.remote.read(path, 0, rec.size)

    async def _free_name(self, parent: int, parent_path: str, name: str) -> str:
        parts = [p for p in parent_path.split("/") if p]
        room = naming.MAX_PATH - naming.path_units(parts) - 1  # the share's path limit
        for n in range(0, 1000):
            cand = conflict_name(name, self.site, n, room)
            if names.why_invalid(cand) or self.ns.find(parent, cand) is not None:
                continue
            try:
                await self.remote.stat(f"{parent_path}/{cand}" if parent_path else cand)
            except NotFound:
                return cand
        raise RuntimeError(f"no free conflict name for {name!r}")

    async def _make_all_dirty(self, ino: int, rec: Inode, path: str | None) -> None:
        """Every byte of the local file becomes dirty, so the upload of the new share file
        sends all of it. Ranges never cached come from `path` (or zeros)."""
        size = rec.size

        async def fetch(offset: int, length: int) -> bytes:
            if path is None:
                return bytes(length)
            return await self.remote.read(path, offset, length)

        for off in range(0, size, CHUNK):
            n = min(CHUNK, size - off)
            data = await self.cache.read(ino, off, n, size=size, fetch=fetch)
            if len(data) < n:
                data = bytes(data) + bytes(n - len(data))
            await self.cache.write(ino, off, data, fetch=fetch)
