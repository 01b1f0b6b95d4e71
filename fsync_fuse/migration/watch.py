"""`migrate --watch`: after the first pass, follow the source while people keep working.

Every directory of the source is watched with inotify (inotify_simple; its descriptor is
waited on with trio, no thread). Events say which directories changed; once the source has
been quiet for QUIET seconds (or MAX_WAIT after the first change, for a source that never
rests), those directories are scanned again (each with everything below it) and copied
like any rerun: the journal makes unchanged entries free. With --delete, what disappeared
from a rescanned directory (removed, or renamed away) is removed from the share too.

A directory created meanwhile is watched once its rescan has seen it. When the kernel's
event queue overflows, the whole source is scanned again. The loop ends when the command is
interrupted (SIGINT/SIGTERM); what was copied so far is recorded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio
from inotify_simple import INotify
from inotify_simple import flags as F

log = logging.getLogger(__name__)

#: a changed directory is rescanned once the source was quiet this long ...
QUIET = 0.5
#: ... or this long after its first change, whatever comes first
MAX_WAIT = 5.0

MASK = (
    F.CREATE | F.CLOSE_WRITE | F.MOVED_FROM | F.MOVED_TO | F.DELETE | F.ATTRIB | F.DELETE_SELF
    | F.MODIFY | F.ONLYDIR | F.DONT_FOLLOW
)  # fmt: skip


@dataclass
class Changes:
    dirs: set[bytes]  # source-relative directories to scan again
    everything: bool = False  # the event queue overflowed: scan the whole source


class Watcher:
    def __init__(self, root: str) -> None:
        self.root = root
        self._ino = INotify()
        self._rel: dict[int, bytes] = {}  # watch descriptor -> directory
        self._wd: dict[bytes, int] = {}

    def watch(self, rels: list[bytes]) -> None:
        """Watch these directories (already watched ones are skipped)."""
        for rel in rels:
            if rel in self._wd:
                continue
            path = os.path.join(os.fsencode(self.root), rel) if rel else os.fsencode(self.root)
            try:
                wd = self._ino.add_watch(path, MASK)
            except OSError as exc:
                log.warning("cannot watch %s: %s", path.decode(errors="replace"), exc.strerror)
                continue
            self._rel[wd], self._wd[rel] = rel, wd

    @property
    def watched(self) -> int:
        return len(self._wd)

    async def changes(self) -> Changes:
        """Wait for changes, then for the source to settle; which directories changed."""
        out = Changes(set())
        await trio.lowlevel.wait_readable(self._ino.fileno())
        deadline = trio.current_time() + MAX_WAIT
        while True:
            self._take(out)
            with trio.move_on_at(min(deadline, trio.current_time() + QUIET)) as quiet:
                await trio.lowlevel.wait_readable(self._ino.fileno())
            if quiet.cancelled_caught or trio.current_time() >= deadline:
                return out

    def _take(self, out: Changes) -> None:
        for ev in self._ino.read(timeout=0):
            if ev.mask & F.Q_OVERFLOW:
                out.everything = True
                continue
            rel = self._rel.get(ev.wd)
            if rel is None:
                continue
            if ev.mask & (F.IGNORED | F.DELETE_SELF):
                self._rel.pop(ev.wd, None)
                self._wd.pop(rel, None)
                continue
            out.dirs.add(rel)

    def close(self) -> None:
        self._ino.close()


def outermost(dirs: set[bytes]) -> set[bytes]:
    """The directories not inside another of the set (a rescan covers everything below)."""
    out = set()
    for d in sorted(dirs, key=len):
        parts = d.split(b"/") if d else []
        if b"" in out or any(b"/".join(parts[:i]) in out for i in range(1, len(parts))):
            continue
        out.add(d)
    return out
