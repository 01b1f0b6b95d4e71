"""Which queued operations may run at the same time.

The outbox is applied in order because each operation's paths are right only once the ones
before it are on the share. But two operations that touch unrelated names commute: creating
`a/x` and `b/y` (or `a/x` and `a/y`) gives the same share in either order. So the worker
applies, side by side, operations whose *footprints* are independent of every earlier
operation still pending; anything touching a name an earlier pending operation touches (the
same name, a parent or a child of it, case-insensitively, or the same inode) waits for it.

A footprint is the set of share paths an operation reads or changes (a rename: both) and the
inodes it names. Independence is decided on paths split into folded components: `a` is
related to `a`, `a/b`, `a/b/c`; the root path (an operation on the share root itself) is
related to everything.

A crash can leave a later operation done and an earlier one not: they were independent, so
replaying the earlier one after the later gives the same share.
"""

from __future__ import annotations

from fsync_fuse import names
from fsync_fuse.outbox import Outbox

Path = tuple[str, ...]


def _split(path: str) -> Path:
    return tuple(names.fold(p) for p in path.split("/") if p)


def footprint(op: dict) -> tuple[list[Path], set[int]]:
    paths = [op[k] for k in ("path", "src", "dst") if op.get(k) is not None]
    inos = {i for i in (op.get("ino"), op.get("victim")) if i}
    return [_split(p) for p in paths], inos


def _related(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def depends(later: tuple[list[Path], set[int]], earlier: tuple[list[Path], set[int]]) -> bool:
    """Must `later` wait for `earlier`?"""
    if later[1] & earlier[1]:
        return True
    return any(_related(a, b) for a in later[0] for b in earlier[0])


class OpWindow:
    """The first `size` pending operations, decoded, and which of them are running."""

    def __init__(self, outbox: Outbox, *, size: int = 64, parallel: int = 8) -> None:
        self.outbox = outbox
        self.size = size
        self.parallel = parallel
        self._ops: dict[int, tuple[dict, tuple[list[Path], set[int]]]] = {}
        self._last = 0  # highest seq read so far
        self.running: set[int] = set()

    def _refill(self) -> None:
        while len(self._ops) < self.size:
            want = self.size - len(self._ops)
            batch = self.outbox.peek(self._last, want)
            for seq, op in batch:
                self._last = seq
                self._admit(seq, op, footprint(op))
            if len(batch) < want:
                return  # the end of the queue

    def _admit(self, seq: int, op: dict, fp: tuple[list[Path], set[int]]) -> None:
        """An operation read from the queue takes its place in the window."""
        self._ops[seq] = (op, fp)

    def _purge(self) -> None:
        """Forget operations rewritten away (outbox.py, "Coalescing"); one still running
        finds out itself (`Outbox.hold`) and ends with nothing to do."""
        for seq in self.outbox.take_withdrawn():
            self._ops.pop(seq, None)
            self.running.discard(seq)

    def ready(self) -> list[tuple[int, dict]]:
        """Operations that may start now, in queue order."""
        self._purge()
        self._refill()
        out: list[tuple[int, dict]] = []
        waiting: list[tuple[list[Path], set[int]]] = []
        for seq in sorted(self._ops):
            op, fp = self._ops[seq]
            if seq not in self.running and not any(depends(fp, w) for w in waiting):
                if len(self.running) + len(out) >= self.parallel:
                    break
                out.append((seq, op))
            waiting.append(fp)  # running, started now or blocked: later ones wait for it
        return out

    def done(self, seq: int) -> None:
        self._ops.pop(seq, None)
        self.running.discard(seq)

    def __len__(self) -> int:
        return len(self._ops)
