"""`fsync-fuse recall PATH...`: bring content local now, in parallel, with progress.

The files at or below the paths (os.scandir on the mount, `--pattern` to choose) that are
not local yet (`user.fsync.info`) are ordered (`--order`) and handed to `--threads` worker
threads, each asking the daemon to recall one file at a time (`user.fsync.do.recall`: the
daemon fetches it in parallel ranged GETs and answers when it is local). A share failure is
retried `--retries` times; the cache bound or the free-space floor stops the run with the
daemon's reason. Ctrl-C stops it at once (exit 130): recalls already asked finish in the
daemon, and running the same command again skips what is local, so it resumes.
"""

from __future__ import annotations

import argparse
import errno
import json
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fsync_fuse import control
from fsync_fuse.commands.common import (
    CommandError,
    ask,
    count,
    counter,
    error,
    info,
    mount_of,
    rate,
    size,
    walk,
)
from fsync_fuse.commands.progress import Progress

ORDERS = ("recent", "heat", "path")
MAX_THREADS = 64
#: errnos worth another try (the share, not the file or the cache, failed)
RETRY_ERRNOS = (errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.EBUSY)


_threads = counter(1, MAX_THREADS)
_retries = counter(0)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "recall",
        help="bring files local now, in parallel, with progress",
        description="Recall (fetch into the cache) every file at or below PATH that is not "
        "local yet, with several files at once, showing files, bytes, rate and ETA. Stops "
        "with the reason when the cache bound or the free-space floor would be crossed. "
        "Ctrl-C stops it; running it again resumes (what is local is skipped).",
        epilog="example: fsync-fuse recall /mnt/share/projects --pattern '*.dwg' --threads 16",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    p.add_argument(
        "--pattern",
        metavar="GLOB",
        help="only files whose name matches (or whose path below PATH, when GLOB has a /)",
    )
    p.add_argument(
        "--threads",
        type=_threads,
        default=8,
        metavar="N",
        help=f"files recalled at once (default 8, at most {MAX_THREADS})",
    )
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="recent",
        help="recent: most recently modified first (default); heat: most used here first; "
        "path: in path order",
    )
    p.add_argument(
        "--retries",
        type=_retries,
        default=3,
        metavar="N",
        help="tries again a file whose recall failed on the share this many times (default 3)",
    )
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.set_defaults(func=run)


@dataclass
class Item:
    path: str
    need: int  # bytes not cached yet (what the progress counts)
    heat: float
    mtime: float


@dataclass
class Outcome:
    item: Item
    answer: dict[str, Any]


def plan(
    paths: list[str], pattern: str | None, order: str, threads: int = 8
) -> tuple[list[Item], int]:
    """(files to recall in order, files already local). Each file's info is asked with
    `threads` requests in flight: the daemon answers them side by side."""
    items: list[Item] = []
    local = 0
    files = list(walk(paths, pattern))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        infos = list(pool.map(lambda f: info(f.path), files))
    for f, i in zip(files, infos, strict=True):
        if i.get("local"):
            local += 1
            continue
        need = max(0, int(i.get("size") or 0) - int(i.get("cached") or 0))
        items.append(Item(f.path, need, float(i.get("heat") or 0.0), f.mtime))
    if order == "heat":
        items.sort(key=lambda it: (-it.heat, it.path))
    elif order == "recent":
        items.sort(key=lambda it: (-it.mtime, it.path))
    else:
        items.sort(key=lambda it: it.path)
    return items, local


class Recall:
    """The worker threads and what they found."""

    def __init__(self, items: list[Item], threads: int, retries: int) -> None:
        self.todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
        for it in items:
            self.todo.put(it)
        #: each worker's outcomes, then None when it ends
        self.results: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.retries = retries
        self.workers = [
            threading.Thread(target=self._work, daemon=True, name=f"recall-{n}")
            for n in range(min(threads, max(1, len(items))))
        ]

    def _work(self) -> None:
        try:
            self._work_items()
        finally:
            self.results.put(None)

    def _work_items(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.todo.get_nowait()
            except queue.Empty:
                return
            tries = 0
            while True:
                ans = ask(item.path, control.ACTION_RECALL)
                err = ans.get("errno")
                if (
                    not ans.get("ok")
                    and tries < self.retries
                    and (ans.get("transient") or err in RETRY_ERRNOS)
                    and not self.stop.wait(min(0.5 * 2**tries, 10.0))
                ):
                    tries += 1
                    continue
                break
            if not ans.get("ok") and ans.get("errno") == errno.ENOSPC:
                self.stop.set()  # the cache is full: no other file would stay either
            self.results.put(Outcome(item, ans))

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def outcomes(self) -> Any:
        """Each outcome as it arrives, until every worker ended. (The timeout only keeps
        Ctrl-C prompt.)"""
        running = len(self.workers)
        while running:
            try:
                out = self.results.get(timeout=0.2)
            except queue.Empty:
                continue
            if out is None:
                running -= 1
            else:
                yield out


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        for path in args.paths:
            mount_of(path)
        items, local = plan(args.paths, args.pattern, args.order, args.threads)
    except CommandError as exc:
        return error(str(exc))
    total = sum(it.need for it in items)
    if not args.quiet:
        print(
            f"recall: {count(len(items), 'file')} to fetch ({size(total)}), {local} local already; "
            f"{args.threads} at a time, {args.order} first",
            file=sys.stderr,
            flush=True,
        )
    progress = Progress(len(items), total, quiet=args.quiet)
    rec = Recall(items, args.threads, args.retries)
    done = fetched = 0
    failed: list[dict[str, Any]] = []
    stopped: str | None = None
    try:
        rec.start()
        for out in rec.outcomes():
            ans = out.answer
            if ans.get("ok"):
                done += 1
                fetched += int(ans.get("fetched") or 0)
                progress.advance(out.item.need)
            elif ans.get("errno") == errno.ENOSPC:
                stopped = stopped or f"the cache is full: {ans.get('error')}"
            elif ans.get("errno") == errno.ENOENT:
                progress.advance(out.item.need)  # removed meanwhile: nothing to recall
            else:
                failed.append({"path": out.item.path, "error": ans.get("error")})
                progress.advance(out.item.need)
    except KeyboardInterrupt:
        rec.stop.set()
        progress.close()
        print(
            f"fsync-fuse: interrupted: {done} of {len(items)} files recalled "
            f"({size(fetched)}); run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    progress.close()
    seconds = time.monotonic() - t0
    left = len(items) - done - len(failed)
    if args.json:
        print(
            json.dumps(
                {
                    "files": done,
                    "fetched": fetched,
                    "local_already": local,
                    "left": left,
                    "failed": failed,
                    "stopped": stopped,
                    "seconds": round(seconds, 3),
                    "threads": args.threads,
                },
                indent=2,
            )
        )
    else:
        print(
            f"recalled {count(done, 'file')}, {size(fetched)} fetched in {seconds:.1f}s "
            f"({rate(fetched / seconds if seconds > 0 else None)}); {local} were local already"
        )
    for f in failed[:20]:
        print(f"fsync-fuse: error: recall of {f['path']} failed: {f['error']}", file=sys.stderr)
    if len(failed) > 20:
        print(f"fsync-fuse: error: ... and {len(failed) - 20} more failed", file=sys.stderr)
    if stopped:
        return error(f"stopped, {left} files not recalled: {stopped}")
    return 1 if failed else 0
