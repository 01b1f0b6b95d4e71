"""Wiring a mount: open the share, the cache and the namespace, then serve FUSE until unmounted.

Order: check the mountpoint and lock the cache directory (cheap, local failures first), open
the share (credentials and existence checked with one call), open the cache, replay what a
previous run left (orphans, queued operations, dirty files), mount, start the background
tasks, report ready. On the way out: drain the queue unless a lazy unmount asked not to,
stop the tasks, close the cache (a clean shutdown), close the share.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from cache import BlockCache, CacheMismatch
from fsync_fuse.config import MountConfig
from fsync_fuse.conflicts import Conflicts
from fsync_fuse.fs import FS
from fsync_fuse.leases import Leases
from fsync_fuse.listing import Lister
from fsync_fuse.namespace import ROOT, Namespace
from fsync_fuse.poller import Poller
from fsync_fuse.reader import Reader
from fsync_fuse.revalidate import Revalidator
from fsync_fuse.writeback import WriteBack
from remote.base import RemoteError

log = logging.getLogger(__name__)


class MountError(Exception):
    """The mount cannot come up; the message is one line for the user."""


def check_mountpoint(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"{path} is a stale mount (its daemon died): run `fusermount3 -u {path}` first"
            ) from None
        raise MountError(f"mountpoint {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mount point")
    if os.listdir(path):
        raise MountError(f"mountpoint {path} is not empty")
    if st.st_uid != os.getuid() and os.getuid() != 0:
        raise MountError(f"mountpoint {path} is not owned by you")


def lock_cache_dir(directory: Path) -> int:
    """One mount per cache directory: two daemons sharing one index would corrupt it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MountError(
            f"cache directory {directory} is in use by another fsync-fuse mount "
            "(give this mount its own --cache-dir)"
        ) from None
    return fd


def fuse_options(cfg: MountConfig) -> set[str]:
    opts = set(pyfuse3.default_options)
    # No max_read: pyfuse3 cannot set conn->max_read to match, and libfuse refuses the mount.
    # Reads are bounded by max_pages (1 MiB) and the kernel read-ahead (see tune_readahead).
    opts |= {f"fsname={cfg.share_url}", "subtype=fsync-fuse"}
    if cfg.allow_other:
        opts.add("allow_other")
    return opts


def tune_readahead(mountpoint: str, nbytes: int) -> None:
    """Let the kernel read ahead as far as one FUSE request carries (its default is 128 KiB);
    root only, best effort. Called after the kernel processed INIT (which sets it too). The
    device number comes from mountinfo: a stat() of our own mountpoint would wait for us."""
    try:
        with open("/proc/self/mountinfo") as fh:
            devs = [line.split()[2] for line in fh if line.split()[4] == mountpoint]
        if not devs:
            return
        with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as fh:
            fh.write(str(max(128, nbytes // 1024)))
    except OSError as exc:
        log.debug("kernel read-ahead left as it is: %s", exc)


async def serve(cfg: MountConfig, ready: Callable[[str | None], None]) -> int:
    """Run the mount until it is unmounted. Calls ready(None) once mounted, or
    ready(message) and raises MountError when it cannot come up."""
    from remote.credentials import open_remote

    check_mountpoint(cfg.mountpoint)
    lock_fd = lock_cache_dir(cfg.cache_dir)
    try:
        try:
            with trio.fail_after(max(cfg.io_timeout, 30)):
                remote = await open_remote(cfg.url, **cfg.creds)
        except trio.TooSlowError:
            raise MountError(f"{cfg.share_url}: no answer from the share") from None
        except RemoteError as exc:
            raise MountError(str(exc)) from None
        try:
            return await _serve(cfg, remote, ready)
        finally:
            with trio.CancelScope(shield=True):
                await remote.aclose()
    finally:
        os.close(lock_fd)


async def _serve(cfg: MountConfig, remote, ready: Callable[[str | None], None]) -> int:
    try:
        cache = BlockCache.open(
            cfg.cache_dir,
            max_bytes=cfg.cache_size,
            share_id=cfg.share_id,
            block_size=cfg.block_size,
        )
    except CacheMismatch as exc:
        raise MountError(f"cache directory {cfg.cache_dir}: {exc}") from None
    try:
        ns = Namespace(cache.env, uid=os.getuid(), gid=os.getgid())
        for ino in ns.purge_orphans():
            cache.delete(ino)
        root = ns.get(ROOT)
        if root is not None and not root.meta_known:
            try:
                entry = await remote.stat("")
                root.apply_metadata(entry.metadata or {}, ns.owner)
                ns.update(
                    ROOT,
                    mode=root.mode,
                    uid=root.uid,
                    gid=root.gid,
                    extra=root.extra,
                    meta_known=True,
                    extra_known=True,
                    attrs=entry.attributes,
                    mtime_ns=entry.last_write_ns or root.mtime_ns,
                )
            except RemoteError as exc:
                log.debug("root metadata unavailable: %s", exc)
        wb = WriteBack(ns, cache, remote, delay=cfg.writeback_delay)
        wb.requeue_all()
        if len(ns.outbox) or wb.status().files:
            st = wb.status()
            log.info(
                "resuming the queue of a previous run: %d operations, %d files", st.ops, st.files
            )
        lister = Lister(
            ns,
            remote,
            cache,
            wb,
            ttl=cfg.attr_timeout,
            list_ttl=cfg.listing_ttl,
            io_timeout=cfg.io_timeout,
        )
        reader = Reader(
            ns,
            cache,
            remote,
            wb,
            io_timeout=cfg.io_timeout,
            max_window=min(cfg.read_ahead, cfg.cache_size // 4),
            recall_max=cfg.cache_size // 4,
        )
        ops = FS(
            ns,
            cache,
            remote,
            wb,
            lister,
            reader,
            attr_timeout=cfg.listing_ttl,
            fsync_remote=cfg.fsync_remote,
            io_timeout=cfg.io_timeout,
        )
        wb.conflicts = Conflicts(ns, remote, cache, site=cfg.site_name)
        wb.conflicts.on_change = ops.conflicted
        if cfg.upload_leases:
            wb.leases = Leases(cache.env, remote)
        poller = Poller(ns, lister, interval=cfg.poll_interval)
        ops.poller = poller
        ops.revalidator = Revalidator(ns, remote, cache, wb, ttl=cfg.attr_timeout, lister=lister)
        try:
            pyfuse3.init(ops, cfg.mountpoint, fuse_options(cfg))
        except RuntimeError as exc:
            raise MountError(
                f"cannot mount on {cfg.mountpoint}: {exc} (is /dev/fuse there, "
                "and fusermount3 installed?)"
            ) from None
        ops.mounted = True
        unmounted = False
        try:
            async with trio.open_nursery() as nursery:
                ops.nursery = nursery
                # the cache's periodic commit goes through _flush_loop (namespace first)
                await nursery.start(functools.partial(cache.run, commit_interval=math.inf))
                await nursery.start(wb.run)
                await nursery.start(lister.run)
                await nursery.start(reader.run)
                await nursery.start(poller.run)
                nursery.start_soon(_on_signals, wb, ops)
                nursery.start_soon(_flush_loop, ns, cache)
                ops.after_init = lambda: tune_readahead(cfg.mountpoint, 1 << 20)
                log.info(
                    "mounted %s on %s (cache %s, %d MiB)",
                    cfg.share_url,
                    cfg.mountpoint,
                    cfg.cache_dir,
                    cfg.cache_size >> 20,
                )
                ready(None)
                await pyfuse3.main()
                unmounted = not ops.terminated  # else we stopped serving: unmount below
                log.info("%s %s", "unmounted" if unmounted else "unmounting", cfg.mountpoint)
                if ops.drain_on_exit:
                    await _drain(wb, cfg.exit_drain_timeout)
                else:
                    st = wb.status()
                    log.info(
                        "lazy unmount: %d operations and %d files (%d bytes) stay queued "
                        "for the next mount",
                        st.ops,
                        st.files,
                        st.bytes,
                    )
                nursery.cancel_scope.cancel()
        finally:
            ops.mounted = False
            pyfuse3.close(unmount=not unmounted)
        return 0
    finally:
        if "ns" in locals():
            ns.flush()
        cache.close()


async def _flush_loop(
    ns: Namespace, cache, interval: float = 2.0, commit_interval: float = 5.0
) -> None:
    """Sizes and mtimes of files being written reach LMDB at least this often, and the
    cache's periodic commit comes right after such a flush: a committed dirty block never
    lies beyond the committed size (else after a crash it would be above EOF, never
    uploaded, and the file re-queued forever). Start-up truncates whatever still does
    (`WriteBack.requeue_all`). A failure is logged: it must not take the mount down."""
    last_commit = trio.current_time()
    while True:
        await trio.sleep(interval)
        try:
            ns.flush()
            if trio.current_time() - last_commit >= commit_interval:
                last_commit = trio.current_time()
                await cache.commit_async()
        except Exception:  # noqa: BLE001
            log.exception("periodic flush/commit failed; retrying")


async def _drain(wb: WriteBack, timeout: float) -> None:
    st = wb.status()
    if not (st.ops or st.files):
        return
    log.info(
        "uploading what is left: %d operations, %d files (%d bytes)", st.ops, st.files, st.bytes
    )
    with trio.move_on_after(timeout) as scope:
        await wb.drain()
    if scope.cancelled_caught:
        st = wb.status()
        log.warning(
            "gave up draining after %.0fs: %d operations and %d files stay queued for "
            "the next mount (%s)",
            timeout,
            st.ops,
            st.files,
            st.error or "no error",
        )


async def _on_signals(wb: WriteBack, ops: FS) -> None:
    """SIGINT/SIGTERM: drain the queue, then unmount; a second signal unmounts at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                continue
            st = wb.status()
            log.info(
                "%s: uploading %d operations and %d files (%d bytes) before unmounting "
                "(signal again to stop now)",
                signal.Signals(signum).name,
                st.ops,
                st.files,
                st.bytes,
            )
            async with trio.open_nursery() as inner:

                async def drain_then_stop() -> None:
                    await wb.drain()
                    inner.cancel_scope.cancel()

                async def second_signal() -> None:
                    async for _ in signals:
                        log.warning("second signal: unmounting now; the rest stays queued")
                        ops.drain_on_exit = False
                        inner.cancel_scope.cancel()
                        return

                inner.start_soon(drain_then_stop)
                inner.start_soon(second_signal)
            ops.terminated = True
            pyfuse3.terminate()
            return
