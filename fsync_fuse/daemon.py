"""The mount daemon's life: come up, serve the kernel until unmounted, leave cleanly.

Order: check the mountpoint and lock the cache directory (cheap, local failures first), open
the share (credentials and existence checked with one call), build and start the mount
(assembly.py: cache, namespace, recovery of what a previous run left, background tasks),
hand it to the kernel, report ready. On the way out: drain the queue unless a lazy unmount
asked not to, stop the tasks, close the cache (a clean shutdown), close the share.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from cache import CacheMismatch
from cache.system import set_mount_readahead
from fsync_fuse import cachelock
from fsync_fuse.assembly import Mount, open_mount
from fsync_fuse.config import MountConfig
from remote.base import Remote, RemoteError

log = logging.getLogger(__name__)

#: what the kernel may read ahead on the mount: as far as one FUSE request carries (1 MiB)
KERNEL_READ_AHEAD = 1 << 20


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
    """One mount per cache directory (cachelock.py)."""
    try:
        return cachelock.lock_cache_dir(directory)
    except cachelock.CacheInUse as exc:
        raise MountError(str(exc)) from None


def fuse_options(cfg: MountConfig) -> set[str]:
    opts = set(pyfuse3.default_options)
    # No max_read: pyfuse3 cannot set conn->max_read to match, and libfuse refuses the mount.
    # Reads are bounded by max_pages (1 MiB) and the kernel read-ahead (KERNEL_READ_AHEAD).
    opts |= {f"fsname={cfg.share_url}", "subtype=fsync-fuse"}
    if cfg.allow_other:
        opts.add("allow_other")
    return opts


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


async def _serve(cfg: MountConfig, remote: Remote, ready: Callable[[str | None], None]) -> int:
    def after_init() -> None:
        # called on the first open: the kernel took our INIT reply (which sets it too) by then
        set_mount_readahead(cfg.mountpoint, KERNEL_READ_AHEAD)

    try:
        async with open_mount(cfg, remote, after_init=after_init) as mount:
            # the log in the cache directory counts in --cache-size (cache/footprint.py)
            mount.cache.other_reserve = cfg.log_reserve
            await _kernel_loop(cfg, mount, ready)
    except CacheMismatch as exc:  # only opening the cache raises it
        raise MountError(f"cache directory {cfg.cache_dir}: {exc}") from None
    return 0


async def _kernel_loop(cfg: MountConfig, mount: Mount, ready: Callable[[str | None], None]) -> None:
    try:
        pyfuse3.init(mount.fs, cfg.mountpoint, fuse_options(cfg))
    except RuntimeError as exc:
        raise MountError(
            f"cannot mount on {cfg.mountpoint}: {exc} (is /dev/fuse there, "
            "and fusermount3 installed?)"
        ) from None
    mount.notifier.mounted = True
    unmounted = False
    terminated = trio.Event()  # we ended the FUSE loop ourselves (a signal)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, mount, terminated)
            log.info(
                "mounted %s on %s (cache %s, %d MiB)",
                cfg.share_url,
                cfg.mountpoint,
                cfg.cache_dir,
                cfg.cache_size >> 20,
            )
            ready(None)
            await pyfuse3.main()
            unmounted = not terminated.is_set()  # else we stopped serving: unmount below
            log.info("%s %s", "unmounted" if unmounted else "unmounting", cfg.mountpoint)
            if mount.control.drain_on_exit:
                await _drain(mount, cfg.exit_drain_timeout)
            else:
                st = mount.writeback.status()
                log.info(
                    "lazy unmount: %d operations and %d files (%d bytes) stay queued "
                    "for the next mount",
                    st.ops,
                    st.files,
                    st.bytes,
                )
            nursery.cancel_scope.cancel()
    finally:
        mount.notifier.mounted = False
        pyfuse3.close(unmount=not unmounted)


async def _drain(mount: Mount, timeout: float) -> None:
    st = mount.writeback.status()
    if st.empty:
        return
    log.info(
        "uploading what is left: %d operations, %d files (%d bytes)", st.ops, st.files, st.bytes
    )
    with trio.move_on_after(timeout) as scope:
        await mount.writeback.drain()
    if scope.cancelled_caught:
        st = mount.writeback.status()
        log.warning(
            "gave up draining after %.0fs: %d operations and %d files stay queued for "
            "the next mount (%s)",
            timeout,
            st.ops,
            st.files,
            st.error or "no error",
        )


async def _on_signals(mount: Mount, terminated: trio.Event) -> None:
    """SIGINT/SIGTERM: drain the queue, then unmount; a second signal unmounts at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                continue
            st = mount.writeback.status()
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
                    await mount.writeback.drain()
                    inner.cancel_scope.cancel()

                async def second_signal() -> None:
                    async for _ in signals:
                        log.warning("second signal: unmounting now; the rest stays queued")
                        mount.control.drain_on_exit = False
                        inner.cancel_scope.cancel()
                        return

                inner.start_soon(drain_then_stop)
                inner.start_soon(second_signal)
            terminated.set()
            pyfuse3.terminate()
            return
