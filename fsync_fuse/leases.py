"""Upload leases: no other site writes a file between our conflict check and our last write.

Azure Files file leases never expire, so a lease this site forgets would lock the file for
everyone: each lease id is recorded (synced, in the `leases` LMDB database: ino → path and
lease id) *before* it is acquired, released in a `finally` (shielded from cancellation), and
every lease still recorded at start (a crash, a release the share did not take) is broken.
The uploader holds the shared side of the write-back lock for the whole leased section, so
no queued operation (rename, unlink) runs on the share while the file is leased and the path
recorded stays the file's path.
"""

from __future__ import annotations

import json
import logging
import uuid

import lmdb
import trio

from remote.base import LeaseConflict, NotFound, Remote, RemoteError, Transient

log = logging.getLogger(__name__)


class Leases:
    def __init__(
        self,
        *,
        env: lmdb.Environment,
        remote: Remote,
    ) -> None:
        self.env = env
        self.remote = remote
        self.db = env.open_db(b"leases")
        self.stats = {"acquired": 0, "released": 0, "broken": 0}

    def _record(self, ino: int, path: str, lease_id: str) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            txn.put(ino.to_bytes(8, "big"), json.dumps({"path": path, "id": lease_id}).encode())

    def _forget(self, ino: int) -> None:
        with self.env.begin(write=True, db=self.db) as txn:
            txn.delete(ino.to_bytes(8, "big"))

    def recorded(self) -> list[tuple[int, str, str]]:
        with self.env.begin(db=self.db) as txn:
            out = []
            for key, raw in txn.cursor():
                rec = json.loads(raw)
                out.append((int.from_bytes(key, "big"), rec["path"], rec["id"]))
            return out

    async def acquire(self, ino: int, path: str) -> str | None:
        """Lease the file at `path`; None when it is not on the share (nothing to protect)."""
        lease_id = str(uuid.uuid4())
        self._record(ino, path, lease_id)
        try:
            await self.remote.acquire_lease(path, lease_id)
        except NotFound:
            self._forget(ino)
            return None
        except LeaseConflict as exc:
            # another site is uploading it right now: never break *its* lease; try later
            self._forget(ino)
            raise Transient(f"{path} is leased by another site: {exc}") from None
        except BaseException:
            # may have been taken anyway (a lost answer): breaking is safe, it is ours
            with trio.CancelScope(shield=True):
                try:
                    await self.remote.break_lease(path)
                    self._forget(ino)
                except RemoteError as exc:
                    if not exc.transient:
                        self._forget(ino)  # no lease there (never taken)
                    # else it stays recorded: broken at the next start
            raise
        self.stats["acquired"] += 1
        return lease_id

    async def release(self, ino: int, path: str, lease_id: str) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.remote.release_lease(path, lease_id)
            except NotFound:
                pass
            except RemoteError as exc:
                log.warning("releasing the upload lease of %s failed: %s", path, exc)
                return  # stays recorded: broken at the next start
            self._forget(ino)
            self.stats["released"] += 1

    async def break_leftovers(self) -> None:
        """At start: break every lease a previous run left behind."""
        for ino, path, _lease_id in self.recorded():
            try:
                await self.remote.break_lease(path)
                log.info("broke the upload lease a previous run left on %s", path)
                self.stats["broken"] += 1
            except NotFound:
                pass
            except RemoteError as exc:
                if exc.transient:
                    log.warning("cannot break the leftover lease on %s yet: %s", path, exc)
                    continue
                log.debug("no leftover lease on %s: %s", path, exc)  # e.g. never taken
            self._forget(ino)
