"""The filesystem built in-process over the emulator, its handlers called directly (no kernel).

Requests are plain objects with the attributes the handlers read (uid/gid of the caller, which
setattr fields are set); everything else (namespace, cache, queue, remote) is the real thing.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pyfuse3
import trio

from cache import BlockCache
from fsync_fuse.fs import FS
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import Namespace
from fsync_fuse.reader import Reader
from fsync_fuse.writeback import WriteBack
from remote.credentials import open_remote

CTX = SimpleNamespace(uid=0, gid=0, pid=0, umask=0o022)


def fields(**set_) -> SimpleNamespace:
    names = (
        "update_atime",
        "update_mtime",
        "update_ctime",
        "update_mode",
        "update_uid",
        "update_gid",
        "update_size",
    )
    return SimpleNamespace(**{n: set_.get(n.removeprefix("update_"), False) for n in names})


def attrs(**values) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    for k, v in values.items():
        setattr(a, k, v)
    return a


@asynccontextmanager
async def filesystem(
    url: str,
    cache_dir,
    *,
    cache_size: int = 64 << 20,
    block_size: int = 1 << 20,
    delay: float = 0.2,
    ttl: float = 1.0,
    read_ahead: int = 4 << 20,
    options=None,
    fsync_remote: bool = False,
    full_timeout: float = 30.0,
):
    remote = await open_remote(url, options=options) if options else await open_remote(url)
    cache = BlockCache.open(
        cache_dir,
        max_bytes=cache_size,
        share_id="inproc",
        block_size=block_size,
        full_timeout=full_timeout,
    )
    try:
        ns = Namespace(cache.env, uid=os.getuid(), gid=os.getgid())
        for ino in ns.purge_orphans():
            cache.delete(ino)
        wb = WriteBack(ns, cache, remote, delay=delay)
        wb.requeue_all()
        lister = Lister(ns, remote, cache, wb, ttl=ttl, io_timeout=30)
        reader = Reader(ns, cache, remote, wb, max_window=read_ahead, io_timeout=30)
        fs = FS(
            ns,
            cache,
            remote,
            wb,
            lister,
            reader,
            attr_timeout=ttl,
            fsync_remote=fsync_remote,
            io_timeout=30,
        )
        async with trio.open_nursery() as nursery:
            fs.nursery = nursery
            await nursery.start(cache.run)
            await nursery.start(wb.run)
            await nursery.start(lister.run)
            await nursery.start(reader.run)
            try:
                yield fs
            finally:
                nursery.cancel_scope.cancel()
        ns.flush()
    finally:
        cache.close()
        await remote.aclose()
