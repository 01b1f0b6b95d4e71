"""Stuck items: what the share refuses for good is set aside, never dropped, never blocking.

**Permanent refusals** (`permanent`): the share cannot hold the name or the path
(`InvalidName`: InvalidResourceName, InvalidFileOrDirectoryPathName, OutOfRangeInput), or it
calls the request itself malformed (HTTP 400 with no more specific meaning). Resending the
same request gets the same answer. Everything else may end and is retried with backoff as
before: network and 5xx, throttling, another site's lease, an expired SAS or a rotated key,
permissions, a full quota, a missing parent (created again).

**Operations** (the outbox): a refused operation *stays in the outbox*, in its place, but is
marked stuck (in memory, and in the `stuck` LMDB database of the namespace's environment,
with its reason). The worker never runs it. Every later operation that depends on it (the
same inode, or a path equal to, above or below one of its paths: opwindow.py's rule) is
marked stuck too, with the reason "waits for stuck <op> <path>", instead of being applied out
of order; everything independent proceeds. Keeping them in the outbox keeps their inodes
"not settled" and "busy": listings never drop the local entries, uploads never use a path the
share does not have, and the order survives restarts.

**Uploads**: a file whose upload is refused for good, or whose share path waits for a stuck
operation (its own create, a directory above it), is set aside the same way: not scheduled
until something changes (a write, a rename of it applied, the stuck operation resolved), its
dirty blocks kept (dirty data is never evicted), recorded with its reason.

**What the user sees**: stuck items are not counted in `user.fsync.pending` (so `fsync-fuse
unmount` and the drain at exit return), `user.fsync.status` has a `stuck` key (count and the
first items: path, operation, reason), and each new stuck item is logged once at ERROR with
what to do. `fsync --fsync remote` of a stuck file fails at once (EIO) instead of waiting.

**Resolution**: the user renames or deletes the stuck entry locally. The operations that do
that depend on the stuck one, so they join it; then `fold` rewrites the stuck operations
into what they amount to (create + rename = create at the new name; create + delete =
nothing; rename + rename = one rename; rename + delete = delete at the old name) and the
result is appended to the outbox again, unmarked, to be retried: moving stuck operations
behind independent ones is safe because they commute. Stuck items are also retried at every
mount (the reason may be gone: another version of the share, a fixed emulator, a shorter
path); a still-refused item is marked again and logged as still stuck.

**Limits**: while an operation is stuck its directories have a pending operation, so the
lister does not refresh them (other sites' changes there show once it is resolved); a read
of a range never cached of an entry whose rename is stuck waits for its settled path and
fails after --io-timeout; any stuck operation on a directory (even an attribute change)
holds the uploads below it; a pair the fold cannot reorder safely (something else now uses
the old name) stays stuck until the next mount, where it is retried in order; of the
operations waiting for one refused operation, the first 20 are logged one by one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import trio

from fsync_fuse.namespace import Namespace
from fsync_fuse.opwindow import OpWindow, footprint
from fsync_fuse.outbox import CREATE_OPS, DELETE_OPS, Outbox
from remote.base import InvalidName, RemoteError

log = logging.getLogger(__name__)

Path = tuple[str, ...]
Footprint = tuple[list[Path], set[int]]

#: how many stuck items `user.fsync.status` lists
STATUS_ITEMS = 20
#: operations waiting for one refused operation that are logged one by one
DEPENDENTS_LOGGED = 20
HINT = (
    "it stays here (nothing is lost); rename or delete it here to resolve it, it is also "
    "retried at the next mount (getfattr -n user.fsync.status MOUNTPOINT lists stuck items)"
)


def permanent(exc: BaseException) -> bool:
    """Is this refusal one no retry can change (see the module doc)?"""
    if isinstance(exc, InvalidName):
        return True
    return type(exc) is RemoteError and exc.status == 400


class StuckError(RemoteError):
    """Raised to a caller that waits for a stuck item (its share path will not settle)."""

    def __init__(self, item: Item, seq: int) -> None:
        super().__init__(f"waits for stuck {item.what} {item.path!r} ({item.reason})")
        self.item = item
        self.seq = seq  # the refused operation


@dataclass(frozen=True, slots=True)
class Item:
    """One stuck operation or upload, as persisted and shown in status."""

    what: str  # the operation ("mkdir", "create", "rename"...) or "upload"
    path: str  # its share path ("src -> dst" for a rename)
    reason: str  # the share's refusal, or "waits for stuck <op> <path>"
    since: float  # when it first got stuck (time.time(), kept across mounts)
    ino: int | None = None
    root: int | None = None  # seq of the refused operation it waits for (None: refused)

    def shown(self) -> dict[str, str]:
        return {"path": self.path, "op": self.what, "reason": self.reason}


def op_path(op: dict) -> str:
    if op.get("src") is not None:
        return f"{op['src']} -> {op['dst']}"
    return str(op.get("path", ""))


def _key(kind: bytes, n: int) -> bytes:
    return kind + n.to_bytes(8, "big")


class Stuck:
    """The stuck operations (by outbox seq) and uploads (by inode) of this mount."""

    def __init__(self, *, ns: Namespace) -> None:
        self.ns = ns
        self.outbox: Outbox = ns.outbox
        self.db = ns.env.open_db(b"stuck")
        self.ops: dict[int, tuple[dict, Item]] = {}
        self.files: dict[int, Item] = {}
        # index of the stuck operations' footprints, so "does this depend on a stuck one?"
        # costs a few dict lookups per path component, however many are stuck
        self._inos: dict[int, set[int]] = {}  # ino (subject or victim) -> seqs
        self._exact: dict[Path, set[int]] = {}  # a path of a stuck op -> seqs
        self._above: dict[Path, set[int]] = {}  # a proper prefix of such a path -> seqs
        self._scopes: set[trio.CancelScope] = set()
        #: what earlier mounts recorded: (what, path, reason) -> since; a record of an item
        #: is removed when it reaches the share, its inode goes, or it is resolved
        self._earlier: dict[tuple[str, str, str], float] = {}
        self._records: dict[bytes, Item] = {}
        #: dependents logged per refused operation (the rest are counted in status only)
        self._logged: dict[int, int] = {}
        #: (what, path, reason) of the items logged in this run
        self._seen: set[tuple[str, str, str]] = set()
        with ns.env.begin(db=self.db) as txn:
            for key, raw in txn.cursor():
                try:
                    item = Item(**json.loads(raw))
                except (ValueError, TypeError):
                    log.warning("ignoring an unreadable stuck record %r", bytes(key))
                    continue
                self._records[bytes(key)] = item
                self._earlier[(item.what, item.path, item.reason)] = item.since

    # ------------------------------------------------------------------ start
    def forget_stale(self, dirty: Iterable[int]) -> None:
        """At start: records of operations no longer queued or files no longer dirty go."""
        queued = set()
        if self._records:
            queued = {seq for seq, _ in self.outbox.peek(0, 1 << 62)}
        still_dirty = set(dirty)
        for key in list(self._records):
            n = int.from_bytes(key[1:], "big")
            if (key[:1] == b"o" and n not in queued) or (key[:1] == b"u" and n not in still_dirty):
                self._unrecord(key)

    # ------------------------------------------------------------------ queries
    def items(self, limit: int = STATUS_ITEMS) -> tuple[int, list[dict[str, str]]]:
        """(how many stuck items, the first `limit` of them) for status. A file waiting for
        its own stuck create is that create's item, not another one."""
        shown: list[dict[str, str]] = []
        count = 0
        for _seq, (_op, item) in sorted(self.ops.items()):
            count += 1
            if len(shown) < limit:
                shown.append(item.shown())
        for ino, item in sorted(self.files.items()):
            if item.root is not None and self._has_own_op(ino):
                continue
            count += 1
            if len(shown) < limit:
                shown.append(item.shown())
        return count, shown

    def _has_own_op(self, ino: int) -> bool:
        """Is one of the stuck operations about `ino` itself (its create, its rename)?"""
        return any(self.ops[s][0].get("ino") == ino for s in self._inos.get(ino, ()))

    def blocking(self, fp: Footprint, seq: int) -> int | None:
        """The earliest stuck operation before `seq` that an operation with footprint `fp`
        depends on (same inode, or related paths), or None."""
        if not self.ops:
            return None
        paths, inos = fp
        found: list[int] = []
        for ino in inos:
            found.extend(self._inos.get(ino, ()))
        for p in paths:
            for k in range(len(p) + 1):
                found.extend(self._exact.get(p[:k], ()))
            found.extend(self._above.get(p, ()))
        earlier = [s for s in found if s < seq]
        return min(earlier) if earlier else None

    def blocking_chain(self, chain: Iterable[int]) -> StuckError | None:
        """The error to raise when a stuck operation is on an inode of `chain` (a file and
        its directories): the file's share path waits for it, names the refused one."""
        if not self.ops:
            return None
        for ino in chain:
            seqs = self._inos.get(ino)
            if seqs:
                root, item = self.root_item(min(seqs))
                return StuckError(item, root)
        return None

    def root_item(self, seq: int) -> tuple[int, Item]:
        """The refused operation a stuck one waits for (itself when it was refused)."""
        item = self.ops[seq][1]
        if item.root is not None and item.root in self.ops:
            return item.root, self.ops[item.root][1]
        return seq, item

    # ------------------------------------------------------------------ waking
    @contextmanager
    def interrupted_by_change(self) -> Iterator[None]:
        """A wait inside ends (without an error) when stuck items change."""
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)

    def _changed(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()

    # ------------------------------------------------------------------ operations
    def stick_op(
        self, seq: int, op: dict, reason: str, root: int | None = None, *, resolving: bool = False
    ) -> Item:
        """Mark a queued operation stuck (refused, or waiting for stuck `root`). `resolving`:
        it renames or removes a stuck entry (about to be folded): not worth an error line."""
        what, path = op["op"], op_path(op)
        since = self._earlier.get((what, path, reason))
        item = Item(what, path, reason, since or time.time(), op.get("ino"), root)
        self.outbox.hold(seq, op)  # set aside as it is: never rewritten (fold.py does that)
        self.ops[seq] = (op, item)
        self._index(seq, op, +1)
        self._record(_key(b"o", seq), item)
        if resolving:
            log.info("%s %r resolves stuck operations", what, path)
        elif root is None:
            self._log(
                item,
                "stuck: the share refuses %s %r for good (%s); %s",
                (what, path, reason, HINT),
            )
        else:
            # every operation waiting for a refused one is logged, up to a point: a tar
            # extracted into a refused directory must not flood the log
            n = self._logged[root] = self._logged.get(root, 0) + 1
            if n <= DEPENDENTS_LOGGED:
                self._log(item, "stuck: %s %r %s", (what, path, reason))
            elif n == DEPENDENTS_LOGGED + 1:
                first = self.ops[root][1] if root in self.ops else item
                log.error(
                    "stuck: more operations wait for stuck %s %r; they are counted in "
                    "user.fsync.status, not logged one by one",
                    first.what,
                    first.path,
                )
        self._changed()
        return item

    def _log(self, item: Item, fmt: str, args: tuple[object, ...]) -> None:
        """Each stuck item once: at ERROR when new, as still stuck when an earlier mount
        recorded it, not again when it is set aside again in this run (a retry)."""
        key = (item.what, item.path, item.reason)
        if key in self._seen:
            log.debug(fmt, *args)
        elif key in self._earlier:
            log.warning(
                "still stuck (since %s): %s %r: %s",
                _when(item.since),
                item.what,
                item.path,
                item.reason,
            )
        else:
            log.error(fmt, *args)
        self._seen.add(key)

    def waits_for(self, seq: int) -> str:
        """The reason of an operation that waits for stuck `seq`."""
        _, item = self.root_item(seq)
        return f"waits for stuck {item.what} {item.path!r}"

    def fold_candidate(self, op: dict) -> bool:
        """Does this newly stuck operation rename or remove an entry an earlier stuck
        operation creates or renames (the user resolving a stuck entry)?"""
        if op["op"] not in ("rename", *DELETE_OPS) or not op.get("ino"):
            return False
        return any(
            self.ops[s][0]["op"] in (*CREATE_OPS, "rename")
            and self.ops[s][0].get("ino") == op["ino"]
            for s in self._inos.get(op["ino"], ())
        )

    def applied(self, seq: int) -> None:
        """An operation reached the share: a record an earlier mount left of it goes."""
        key = _key(b"o", seq)
        item = self._records.get(key)
        if item is not None:
            log.info("no longer stuck: %s %r reached the share", item.what, item.path)
            self._unrecord(key)

    def take_ops(self) -> list[tuple[int, dict]]:
        """Remove every stuck operation from the stuck set (they are being rewritten)."""
        out = [(seq, op) for seq, (op, _) in sorted(self.ops.items())]
        for seq, (op, _) in list(self.ops.items()):
            self._index(seq, op, -1)
            self._unrecord(_key(b"o", seq))
        self.ops.clear()
        self._changed()
        return out

    def _index(self, seq: int, op: dict, delta: int) -> None:
        paths, inos = footprint(op)
        for ino in inos:
            _adjust(self._inos, ino, seq, delta)
        for p in paths:
            _adjust(self._exact, p, seq, delta)
            for k in range(len(p)):
                _adjust(self._above, p[:k], seq, delta)

    # ------------------------------------------------------------------ uploads
    def stick_file(self, ino: int, path: str, reason: str, root: int | None = None) -> None:
        """Set a dirty file aside: its upload is refused for good, or waits for stuck
        operation `root`. Logged once per new reason."""
        old = self.files.get(ino)
        if old is not None and old.reason == reason:
            return
        since = self._earlier.get(("upload", path, reason))
        item = Item("upload", path, reason, since or (old.since if old else time.time()), ino, root)
        self.files[ino] = item
        self._record(_key(b"u", ino), item)
        if root is None:
            self._log(
                item,
                "stuck: the share refuses the upload of %r for good (%s); %s",
                (path, reason, HINT),
            )
        elif not self._has_own_op(ino):
            self._log(item, "stuck: the upload of %r %s", (path, reason))
        self._changed()

    def unstick_file(self, ino: int, *, reached: bool = False) -> bool:
        """The file is no longer set aside (retried, uploaded or gone). True if it was."""
        item = self.files.pop(ino, None)
        key = _key(b"u", ino)
        if reached and key in self._records:
            log.info("no longer stuck: %r reached the share", self._records[key].path)
        self._unrecord(key)
        if item is not None:
            self._changed()
        return item is not None

    def blocked_files(self) -> list[int]:
        """Files set aside because they wait for a stuck operation."""
        return [ino for ino, item in self.files.items() if item.root is not None]

    # ------------------------------------------------------------------ persistence
    def _record(self, key: bytes, item: Item) -> None:
        self._records[key] = item
        self.ns.write_behind(self.db, key, json.dumps(asdict(item)).encode())

    def _unrecord(self, key: bytes) -> None:
        if self._records.pop(key, None) is not None:
            self.ns.write_behind(self.db, key, None)


def _adjust(index: dict, key: object, seq: int, delta: int) -> None:
    if delta > 0:
        index.setdefault(key, set()).add(seq)
        return
    seqs = index.get(key)
    if seqs is not None:
        seqs.discard(seq)
        if not seqs:
            del index[key]


def _when(since: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))


# ---------------------------------------------------------------------- the window


class Window(OpWindow):
    """The first `size` pending operations that are not stuck, and which of them run.

    An opwindow.OpWindow, plus: an operation that depends on a stuck one is marked stuck when
    it is read (it never takes a place in the window), and when an operation gets stuck,
    those of the window that depend on it follow."""

    def __init__(self, outbox: Outbox, stuck: Stuck, *, size: int = 64, parallel: int = 8):
        super().__init__(outbox, size=size, parallel=parallel)
        self.stuck = stuck
        #: set when an operation that may resolve a stuck entry got stuck: the worker folds
        self.fold_due = False

    def _admit(self, seq: int, op: dict, fp: Footprint) -> None:
        root = self.stuck.blocking(fp, seq)
        if root is not None:
            self._stick_dependent(seq, op, root)
        else:
            self._ops[seq] = (op, fp)

    def _stick_dependent(self, seq: int, op: dict, blocker: int) -> None:
        root, _ = self.stuck.root_item(blocker)
        resolving = self.stuck.fold_candidate(op)
        self.stuck.stick_op(seq, op, self.stuck.waits_for(blocker), root=root, resolving=resolving)
        if resolving or op["op"] in ("rename", *DELETE_OPS):
            self.fold_due = True  # (a rename of a directory above stuck entries may help)

    def stick(self, seq: int, op: dict, reason: str) -> None:
        """A running operation was refused for good: it and the waiting operations of the
        window that depend on it are stuck."""
        self.done(seq)
        self._purge()
        self.stuck.stick_op(seq, op, reason)
        for later in sorted(s for s in self._ops if s > seq and s not in self.running):
            later_op, fp = self._ops[later]
            blocker = self.stuck.blocking(fp, later)
            if blocker is not None:
                del self._ops[later]
                self._stick_dependent(later, later_op, blocker)
