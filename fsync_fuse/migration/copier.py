"""Copying a scanned source tree into the share: directories, then files in parallel, then
directory times; the journal says what is done already.

Every file is created under a temporary name (`.fsync-new-m…`, which mounts never list),
filled, and renamed to its name without replacing anything: a file already at that name is
only replaced when the journal says this migration put it there and the share still has
that version (same ETag), i.e. the source changed since. Any other file at the name is left
alone and reported (never overwritten). A file at its name with the source's size and
last-write time and our metadata, known to the journal only as under way, is the copy a
killed run finished before recording it: it is recorded, not sent again.

Small files go in three calls (Create File, Put Range, Rename File: `create_filled`); larger
ones are created, then filled in parallel 4 MiB ranges, each range recorded in the journal
as it lands, so a rerun resumes at the first range not on the share.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from fsync_fuse.attrs import DIR, FILE
from fsync_fuse.migration.journal import Journal
from fsync_fuse.migration.source import TMP_PREFIX, Entry, Scan, dirs_by_depth, pread, show
from fsync_fuse.writeback.shareops import with_parents
from remote.base import (
    AlreadyExists,
    AuthFailed,
    NotFound,
    PermissionDenied,
    Remote,
    RemoteEntry,
    RemoteError,
)

log = logging.getLogger(__name__)

RANGE = 4 * 1024 * 1024
#: ranges read ahead of the MD5 of a large file (memory: this many x RANGE)
HASH_AHEAD = 8


class Abort(Exception):
    """Nothing more can be copied (credentials refused): one line for the user."""


@dataclass
class Outcome:
    copied: int = 0
    unchanged: int = 0
    adopted: int = 0  # found finished on the share by a rerun
    deleted: int = 0
    bytes_sent: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    kept_on_share: list[dict[str, str]] = field(default_factory=list)  # --delete refused
    verified: int = 0  # --verify: files whose size and Content-MD5 match the source
    mismatched: list[dict[str, str]] = field(default_factory=list)


class Copier:
    def __init__(
        self,
        *,
        remote: Remote,
        journal: Journal,
        root: str,
        scan: Scan,
        owner: tuple[int, int],
        threads: int,
        on_file: Callable[[int], None] = lambda nbytes: None,
    ) -> None:
        self.remote, self.journal, self.root, self.scan = remote, journal, root, scan
        self.owner = owner
        self.limit = trio.CapacityLimiter(threads)
        self.on_file = on_file
        self.out = Outcome()
        self._bad_dirs: set[bytes] = set()  # directories that could not be made
        self._touched: set[bytes] = set()  # directories whose content changed in this run
        self._made: set[bytes] = set()  # directories made or changed in this run

    async def run(self, *, delete: bool, scope: set[bytes] | None = None) -> Outcome:
        """Copy the scan; with `delete`, remove what the journal has and the scan does not,
        within `scope` (the directories the scan walked; None: the whole source)."""
        levels = dirs_by_depth(self.scan.entries)
        for level in levels:
            await self._parallel(self._dir, level)
        await self._parallel(self._file, [e for e in self.scan.entries if e.kind != DIR])
        for level in reversed(levels):
            await self._parallel(self._dir_done, level)
        if delete:
            await self._delete_missing(scope)
        self.journal.commit()
        return self.out

    async def _parallel(self, fn: Callable[[Entry], Any], entries: list[Entry]) -> None:
        """fn on every entry, `threads` at a time. A failure is the entry's (reported); a
        refusal of the credentials stops everything (Abort, raised here after the others
        were cancelled: never out of the nursery, which would wrap it in a group)."""
        refused: list[str] = []

        async def one(e: Entry) -> None:
            async with self.limit:
                try:
                    await fn(e)
                except (PermissionDenied, AuthFailed) as exc:
                    refused.append(str(exc))
                    n.cancel_scope.cancel()
                except (RemoteError, OSError) as exc:
                    self._fail(
                        e, str(exc) if isinstance(exc, RemoteError) else exc.strerror or str(exc)
                    )

        async with trio.open_nursery() as n:
            for e in entries:
                n.start_soon(one, e)
        if refused:
            raise Abort(
                f"the share refused a change ({refused[0]}): do the credentials allow writing?"
            )

    def _fail(self, e: Entry, reason: str) -> None:
        log.debug("%s: %s", e.share, reason)
        self.out.failed.append({"path": show(e.rel), "reason": reason})
        if e.kind == DIR:
            self._bad_dirs.add(e.rel)

    def _parent_failed(self, e: Entry) -> bool:
        if e.rel and _parent(e.rel) in self._bad_dirs:
            self._fail(e, "its directory could not be made on the share")
            return True
        return False

    # --- directories

    async def _dir(self, e: Entry) -> None:
        if self._parent_failed(e):
            return
        rec = self.journal.get(e.rel)
        if rec is not None and rec["sig"] == e.signature():
            self.out.unchanged += 1
            return
        if not e.share:  # the share's root: nothing to make, its properties stay
            self._touched.add(e.rel)
            return
        meta, attrs = e.share_props(self.owner)
        try:
            # (the target directory's parents, SHARE_URL/a/b, may not exist yet)
            await with_parents(
                self.remote,
                e.share,
                lambda: self.remote.mkdir(e.share, metadata=meta, attributes=attrs),
                expected=not e.rel,  # (else it vanished meanwhile: worth a warning)
            )
        except AlreadyExists:
            there = await self.remote.stat(e.share)
            if not there.is_dir:
                raise RemoteError("a file of that name is on the share: left as it is") from None
            await self.remote.set_properties(e.share, metadata=meta, attributes=attrs, is_dir=True)
        self._touched.add(e.rel)
        self._made.add(e.rel)

    async def _dir_done(self, e: Entry) -> None:
        """Its times, once its content is in place (adding entries moves a directory's
        last-write time); then it is recorded."""
        if e.rel in self._bad_dirs or e.rel not in self._touched:
            return
        if e.share:
            await self.remote.set_properties(e.share, last_write_ns=e.mtime_ns, is_dir=True)
        self.journal.record(e.rel, {"sig": e.signature(), "share": e.share})
        if e.rel in self._made:
            self.out.copied += 1

    # --- files, symlinks, special files

    async def _file(self, e: Entry) -> None:
        if self._parent_failed(e):
            return
        rec = self.journal.get(e.rel)
        if rec is not None and rec["sig"] == e.signature():
            self.out.unchanged += 1
            self.on_file(e.size)
            return
        self._touched.add(_parent(e.rel))
        if e.kind == FILE and e.size > RANGE:
            await self._large(e, rec)
        else:
            await self._small(e, rec)
        self.on_file(e.size)

    async def _small(self, e: Entry, rec: dict[str, Any] | None) -> None:
        if rec is None and await self._finished_before(e):
            return
        md5 = None
        if e.kind == FILE:
            data = await trio.to_thread.run_sync(self._read, e)
            md5 = hashlib.md5(data).digest()
        else:
            data = (e.target or "").encode("utf-8", "surrogateescape")
        meta, attrs = e.share_props(self.owner)
        tmp = self._tmp(e)
        self.journal.record_partial(e.rel, {"sig": e.signature(), "tmp": tmp})
        try:
            entry = await self.remote.create_filled(
                tmp,
                e.share,
                len(data),
                [(0, data)] if data else [],
                metadata=meta,
                last_write_ns=e.mtime_ns,
                attributes=attrs,
                content_md5=md5,
                creation_ns=e.birth_ns,
            )
        except AlreadyExists:
            got = await self._occupied(e, rec, tmp)
            if got is None:
                return
            entry = got
        self._done(e, entry, len(data))

    async def _finished_before(self, e: Entry) -> bool:
        """A run killed after this entry's upload and before its record left a `partial`
        record: the share may have it finished at its name (then it is recorded, not sent
        again; a temporary file left behind is removed)."""
        part = self.journal.get_partial(e.rel)
        if part is None or part["sig"] != e.signature():
            return False
        try:
            there = await self.remote.stat(e.share)
        except NotFound:
            there = None
        ours = there is not None and (
            there.file_id == part.get("file_id") or self._is_our_copy(e, there)
        )
        if there is not None and ours:
            await self._discard(part["tmp"])
            self._record(e, there)
            self.out.adopted += 1
            return True
        if e.kind != FILE or e.size <= RANGE:
            await self._discard(part["tmp"])  # the killed attempt's; a new one starts
        return False

    async def _large(self, e: Entry, rec: dict[str, Any] | None) -> None:
        meta, attrs = e.share_props(self.owner)
        part = self.journal.get_partial(e.rel)
        tmp, file_id, done = None, None, set()
        if part is not None and part["sig"] == e.signature():
            try:
                there = await self.remote.stat(part["tmp"])
                if there.file_id == part["file_id"] and there.size == e.size:
                    tmp, file_id, done = part["tmp"], part["file_id"], set(part["done"])
            except NotFound:  # renamed already, and killed before that was recorded?
                if rec is None and await self._finished_before(e):
                    return
        if tmp is None:
            tmp = self._tmp(e)
            made = await self.remote.create_file(
                tmp,
                e.size,
                metadata=meta,
                last_write_ns=e.mtime_ns,
                attributes=attrs,
                creation_ns=e.birth_ns,
            )
            file_id = made.file_id
            self.journal.record_partial(
                e.rel, {"sig": e.signature(), "tmp": tmp, "file_id": file_id, "done": []}
            )
        failed: list[RemoteError | OSError] = []
        h = hashlib.md5()
        # Read once, in order: each range goes to the hasher and, unless an earlier run sent
        # it, to the uploaders, so the Content-MD5 is of the bytes sent (a second pass over the
        # file for the MD5 cost as much CPU as the uploads on a busy machine). The hasher has
        # a channel of its own: the MD5 (one core, serial) never waits for a read or an upload.
        send, receive = trio.open_memory_channel[tuple[int, bytes]](int(self.limit.total_tokens))
        to_hash, hashing = trio.open_memory_channel[bytes](HASH_AHEAD)

        async def read_in_order() -> None:
            async with send, to_hash:
                for i in range((e.size + RANGE - 1) // RANGE):
                    off = i * RANGE
                    try:
                        data = await trio.to_thread.run_sync(
                            pread, self._src(e), off, min(RANGE, e.size - off)
                        )
                    except OSError as exc:
                        failed.append(exc)
                        n.cancel_scope.cancel()
                        return
                    await to_hash.send(data)
                    if i not in done:
                        await send.send((i, data))

        async def digest() -> None:
            async with hashing:
                async for data in hashing:
                    await trio.to_thread.run_sync(h.update, data)  # (releases the GIL)

        async def upload(receive: trio.MemoryReceiveChannel[tuple[int, bytes]]) -> None:
            async with receive:
                async for i, data in receive:
                    async with self.limit:
                        try:
                            await self.remote.write(tmp, i * RANGE, data, keep_mtime=True)
                        except RemoteError as exc:  # the file's failure, raised below
                            failed.append(exc)
                            n.cancel_scope.cancel()
                            return
                    done.add(i)
                    self.out.bytes_sent += len(data)
                    part = {"sig": e.signature(), "tmp": tmp, "file_id": file_id}
                    self.journal.record_partial(e.rel, {**part, "done": sorted(done)})

        # this task holds a slot of the limiter; its ranges take others
        self.limit.release_on_behalf_of(trio.lowlevel.current_task())
        try:
            async with trio.open_nursery() as n, receive:
                n.start_soon(read_in_order)
                n.start_soon(digest)
                for _ in range(int(self.limit.total_tokens)):
                    n.start_soon(upload, receive.clone())
        finally:
            await self.limit.acquire_on_behalf_of(trio.lowlevel.current_task())
        if failed:
            raise failed[0]  # the ranges on the share stay recorded: a rerun resumes
        # before it takes its name: a file at its name always has its Content-MD5 (--verify)
        await self.remote.set_content_md5(tmp, h.digest())
        try:
            entry = await self.remote.rename_new(tmp, e.share, file_id)
        except AlreadyExists:
            got = await self._occupied(e, rec, tmp)
            if got is None:
                return
            entry = got
        self._done(e, entry, 0)

    async def _occupied(self, e: Entry, rec: dict[str, Any] | None, tmp: str) -> RemoteEntry | None:
        """The name is taken on the share; our filled temporary file is at `tmp`."""
        there = await self.remote.stat(e.share)
        if rec is not None and not there.is_dir and there.etag == rec.get("etag"):
            # ours from an earlier run, unchanged there since: the source changed, replace it
            entry = await self.remote.rename(tmp, e.share, replace=True)
            return entry if entry is not None else await self.remote.stat(e.share)
        await self._discard(tmp)
        if rec is None and self._is_our_copy(e, there):
            self._record(e, there)
            self.out.adopted += 1
            return None
        what = "a directory" if there.is_dir else "a file"
        why = "changed on the share since it was copied" if rec else "not copied by this migration"
        raise RemoteError(f"{what} of that name is on the share ({why}): left as it is")

    def _is_our_copy(self, e: Entry, there: RemoteEntry) -> bool:
        meta, _ = e.share_props(self.owner)
        have = {k.lower(): v for k, v in (there.metadata or {}).items()}
        return (
            not there.is_dir
            and there.size == e.size  # (a symlink's: its target's length)
            and there.last_write_ns == e.mtime_ns // 100 * 100
            and all(have.get(k.lower()) == v for k, v in meta.items())
        )

    def _record(self, e: Entry, entry: RemoteEntry) -> None:
        """`entry` is the share's copy of `e` (the journal's `done` record)."""
        self.journal.record(
            e.rel,
            {"sig": e.signature(), "share": e.share, "etag": entry.etag, "file_id": entry.file_id},
        )

    def _done(self, e: Entry, entry: RemoteEntry, sent: int) -> None:
        self._record(e, entry)
        self.out.copied += 1
        self.out.bytes_sent += sent

    async def _discard(self, tmp: str) -> None:
        try:
            await self.remote.delete_file(tmp)
        except RemoteError as exc:
            log.debug("leaving %s on the share: %s", tmp, exc)

    def _tmp(self, e: Entry) -> str:
        parent = e.share.rpartition("/")[0]
        name = TMP_PREFIX + secrets.token_hex(8)
        return f"{parent}/{name}" if parent else name

    def _read(self, e: Entry) -> bytes:
        with open(self._src(e), "rb") as fh:
            return fh.read()

    def _md5(self, e: Entry) -> bytes:
        h = hashlib.md5()
        with open(self._src(e), "rb") as fh:
            while chunk := fh.read(RANGE):
                h.update(chunk)
        return h.digest()

    def _src(self, e: Entry) -> bytes:
        return os.path.join(os.fsencode(self.root), e.rel)

    # --- --verify

    async def verify(self) -> None:
        """Every regular file of the scan the journal has as copied: the share's size and
        Content-MD5 (set when it was made) against the source's, read now."""

        async def one(e: Entry) -> None:
            if e.kind != FILE or self.journal.get(e.rel) is None:
                return
            there = await self.remote.stat(e.share)
            md5 = base64.b64encode(await trio.to_thread.run_sync(self._md5, e)).decode()
            if there.size != e.size:
                why = f"{there.size} bytes on the share, {e.size} in the source"
            elif there.content_md5 != md5:
                why = f"Content-MD5 {there.content_md5 or 'not set'} on the share, {md5} in the source"
            else:
                self.out.verified += 1
                return
            self.out.mismatched.append({"path": show(e.rel), "reason": why})

        await self._parallel(one, self.scan.entries)

    # --- --delete

    async def _delete_missing(self, scope: set[bytes] | None) -> None:
        """Entries the journal has and the source no longer does: removed from the share when
        the share still has the version this migration put there (files first, then
        directories deepest first)."""
        present = {e.rel for e in self.scan.entries}
        recs = {
            rel: rec
            for rel, rec in self.journal.records()
            if rel not in present and (scope is None or _within(rel, scope))
        }
        files = [rel for rel, rec in recs.items() if rec["sig"][0] != DIR]
        dirs = sorted(
            (rel for rel, rec in recs.items() if rec["sig"][0] == DIR), key=lambda r: -r.count(b"/")
        )

        async def rm_file(rel: bytes) -> None:
            rec = recs[rel]
            try:
                there = await self.remote.stat(rec["share"])
            except NotFound:
                self.journal.forget(rel)
                return
            if there.etag != rec.get("etag"):
                self.out.kept_on_share.append(
                    {"path": show(rel), "reason": "changed on the share since it was copied"}
                )
                return
            await self.remote.delete_file(rec["share"])
            self.journal.forget(rel)
            self.out.deleted += 1

        async with trio.open_nursery() as n:
            for rel in files:
                n.start_soon(self._guarded, rm_file, rel)
        for rel in dirs:
            rec = recs[rel]
            if not rec["share"]:  # the share's root
                continue
            try:
                await self.remote.rmdir(rec["share"])
                self.out.deleted += 1
            except NotFound:
                pass
            except RemoteError as exc:
                self.out.kept_on_share.append({"path": show(rel), "reason": str(exc)})
                continue
            self.journal.forget(rel)

    async def _guarded(self, fn: Callable[[bytes], Any], rel: bytes) -> None:
        async with self.limit:
            try:
                await fn(rel)
            except RemoteError as exc:
                self.out.kept_on_share.append({"path": show(rel), "reason": str(exc)})


def _within(rel: bytes, dirs: set[bytes]) -> bool:
    """Is `rel` inside one of `dirs` (at any depth; b"" is the source itself)?"""
    if b"" in dirs:
        return True
    parts = rel.split(b"/")
    return any(b"/".join(parts[:i]) in dirs for i in range(1, len(parts)))


def _parent(rel: bytes) -> bytes:
    """The directory of a source path (b"" for one at the top)."""
    return rel.rpartition(b"/")[0]
