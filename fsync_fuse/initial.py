"""The initial download of a new or replacement machine (`--initial-download`).

`namespace` (the default) serves the namespace at once and fetches content on demand.
`recent` then recalls in the background the most recently modified files, newest first,
until they would fill 90% of what the cache's data may use; `all` every file that fits,
newest first too. The walk lists every directory from the share (what the first `ls` of each
would do); the recalls go through the Recaller's queue at the lowest priority, so a file
someone opens jumps ahead and the policies (free space, pins, dirty data) still hold. Done
once per cache (a marker in `nsmeta`): a remount does not start it again.
"""

from __future__ import annotations

import heapq
import logging

import trio

from cache import BlockCache
from fsync_fuse.attrs import FILE
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import ROOT, Namespace
from fsync_fuse.recall import INITIAL, Recaller
from remote.base import RemoteError

log = logging.getLogger(__name__)

#: `recent` stops at this share of what the cache's data may use
RECENT_SHARE = 0.9
_DONE = b"initial_download_done"


def is_done(ns: Namespace) -> bool:
    """Has this cache had its initial download (migrate --cutover waits for it)?"""
    with ns.env.begin() as txn:
        return txn.get(_DONE, db=ns.db_meta) is not None


async def initial_download(
    mode: str, *, ns: Namespace, cache: BlockCache, lister: Lister, recaller: Recaller
) -> None:
    if mode == "namespace":
        return
    if is_done(ns):
        return
    stats = cache.stats()
    budget = (stats.max_bytes - stats.reserved) * (RECENT_SHARE if mode == "recent" else 1.0)
    # the newest files whose sizes add up to the budget: a min-heap on mtime
    chosen: list[tuple[int, int, int]] = []  # (mtime, ino, size)
    total = 0
    dirs, listed = [ROOT], 0
    while dirs:
        d = dirs.pop()
        try:
            await lister.ensure(d, refresh_stale=False)
        except (RemoteError, OSError) as exc:
            log.warning("initial download: cannot list %r: %s", ns.path(d), exc)
            continue
        listed += 1
        for rec in ns.iter_children(d):
            if rec.is_dir:
                dirs.append(rec.ino)
            elif rec.kind == FILE and 0 < rec.size <= budget:
                heapq.heappush(chosen, (rec.mtime_ns, rec.ino, rec.size))
                total += rec.size
                while total > budget:
                    _m, _i, size = heapq.heappop(chosen)
                    total -= size
    order = sorted(chosen, reverse=True)  # newest first
    for _mtime, ino, _size in order:
        recaller.queue(ino, INITIAL)
    log.info(
        "initial download (%s): %d directories listed, %d files (%d bytes) queued, newest first",
        mode,
        listed,
        len(order),
        total,
    )
    while recaller.pending():  # done only once recalled: an unmount before resumes it
        await trio.sleep(1)
    with ns.env.begin(write=True) as txn:
        txn.put(_DONE, b"1", db=ns.db_meta)
    log.info("initial download (%s) done", mode)
