"""Reading the source tree: every entry with what the share will hold of it.

A walk with os.scandir (no symlink is followed), in one worker thread. Each entry gets its
path on the share, checked as the mount checks a name at the system call (fsync_fuse/
names.py): characters Azure Files forbids, a trailing dot, device names, names over 255
bytes or not UTF-8, two names of one directory that differ only in case, paths over the
share's limit. Such an entry is never dropped silently: it is reported with the reason and
skipped (a directory with everything below it), or with `rename_invalid` given a safe name
(the mapping is reported).
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from dataclasses import dataclass, field

from fsync_fuse import names
from fsync_fuse.attrs import DIR, FILE, LINK, Inode, kind_of_mode, with_marker

#: the temporary name a file is created under on the share (copier.py), as long as any
TMP_PREFIX = ".fsync-new-m"
TMP_TEMPLATE = TMP_PREFIX + "0" * 16


@dataclass(slots=True)
class Entry:
    rel: bytes  # path below the source, as the source names it ("" for the source itself)
    share: str  # path on the share (below the target directory's path)
    kind: str  # attrs.FILE, DIR, LINK, FIFO, SOCK, CHR, BLK
    size: int
    mtime_ns: int
    ino: int
    mode: int
    uid: int
    gid: int
    rdev: int = 0
    target: str | None = None  # a symlink's target
    birth_ns: int | None = None  # creation time, where the source's filesystem keeps one

    def inode(self) -> Inode:
        """The record the mount would keep for it (attrs.py builds the share metadata)."""
        return Inode(
            ino=0,
            parent=1,
            name=self.share.rpartition("/")[2],
            kind=self.kind,
            size=self.size,
            mtime_ns=self.mtime_ns,
            mode=self.mode & 0o7777,
            uid=self.uid,
            gid=self.gid,
            target=self.target,
            rdev=self.rdev,
        )

    def share_props(self, owner: tuple[int, int]) -> tuple[dict[str, str], str]:
        """(metadata, SMB attributes) as the mount stores this entry."""
        rec = self.inode()
        marked = self.kind not in (FILE, DIR) or not rec.posix_default(owner)
        return rec.metadata(owner), with_marker(None, marked, self.kind == DIR)

    def signature(self) -> list[object]:
        """What makes two sightings of the entry the same version (journal.py)."""
        return [self.kind, self.size, self.mtime_ns, self.ino, self.mode, self.uid, self.gid,
                self.target]  # fmt: skip


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)  # parents before their children
    invalid: list[dict[str, str]] = field(default_factory=list)  # skipped, with the reason
    renamed: list[dict[str, str]] = field(default_factory=list)  # source path -> share path
    hardlinks: list[dict[str, str]] = field(default_factory=list)  # copied as separate files
    failed: list[dict[str, str]] = field(default_factory=list)  # unreadable
    files: int = 0  # every entry but directories
    nbytes: int = 0  # of regular files


def scan(
    root: str,
    base: list[str],
    *,
    rename_invalid: bool,
    below: dict[bytes, str] | None = None,
) -> Scan:
    """Walk `root` (a directory); `base`: the target directory's path components on the
    share. `below`: walk only these directories of the source (relative path -> their path
    on the share), each with everything in it (--watch rescans what changed)."""
    out = Scan()
    seen_links: dict[tuple[int, int], str] = {}
    starts = below if below is not None else {b"": "/".join(base)}
    for rel, share in starts.items():
        try:
            st = os.lstat(os.path.join(root, os.fsdecode(rel)) if rel else root)
        except OSError as exc:
            out.failed.append({"path": show(rel), "reason": f"cannot stat: {exc.strerror}"})
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue  # replaced by a file meanwhile: its parent's rescan sees it
        out.entries.append(_entry(rel, share, DIR, st))
        _walk(out, root, rel, share.split("/") if share else [], seen_links, rename_invalid)
    return out


def _walk(
    out: Scan,
    root: str,
    rel: bytes,
    parts: list[str],
    seen_links: dict[tuple[int, int], str],
    rename_invalid: bool,
) -> None:
    here = os.path.join(root, os.fsdecode(rel)) if rel else root
    try:
        with os.scandir(here) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        out.failed.append({"path": show(rel), "reason": f"cannot list: {exc.strerror}"})
        return
    taken: dict[str, str] = {}
    subdirs: list[tuple[bytes, list[str]]] = []
    for d in children:
        crel = os.path.join(rel, os.fsencode(d.name)) if rel else os.fsencode(d.name)
        try:
            st = d.stat(follow_symlinks=False)
        except OSError as exc:
            out.failed.append({"path": show(crel), "reason": f"cannot stat: {exc.strerror}"})
            continue
        kind = kind_of_mode(st.st_mode)
        if kind is None:
            out.invalid.append(
                {"path": show(crel), "reason": "a kind of file the share cannot hold"}
            )
            continue
        name, reason = _share_name(d.name, taken, kind == DIR, parts, rename_invalid)
        if name is None:
            what = " (and everything in it)" if kind == DIR else ""
            out.invalid.append({"path": show(crel), "reason": f"{reason}{what}"})
            continue
        taken[names.fold(name)] = d.name
        e = _entry(crel, "/".join([*parts, name]), kind, st)
        if kind == FILE:
            e.birth_ns = birth_ns(os.path.join(os.fsencode(root), crel))
        if reason is not None:
            out.renamed.append({"path": show(crel), "share_path": e.share, "reason": reason})
        if kind == LINK:
            try:
                e.target = os.readlink(os.path.join(root, os.fsdecode(crel)))
            except OSError as exc:
                out.failed.append(
                    {"path": show(crel), "reason": f"cannot read link: {exc.strerror}"}
                )
                continue
            e.size = len(e.target.encode("utf-8", "surrogateescape"))
        if kind != DIR:
            out.files += 1
        if kind == FILE:
            out.nbytes += st.st_size
            if st.st_nlink > 1:
                first = seen_links.setdefault((st.st_dev, st.st_ino), show(crel))
                if first != show(crel):
                    out.hardlinks.append({"path": show(crel), "same_as": first})
        out.entries.append(e)
        if kind == DIR:
            subdirs.append((crel, [*parts, name]))
    for crel, cparts in subdirs:
        _walk(out, root, crel, cparts, seen_links, rename_invalid)


def _share_name(
    name: str, taken: dict[str, str], is_dir: bool, parts: list[str], rename_invalid: bool
) -> tuple[str | None, str | None]:
    """(name on the share, why it differs or cannot be): (name, None) when it can stay."""
    reason = _why(name, taken)
    if reason is None:
        reason = names.path_refusal([*parts, name], tmp=None if is_dir else TMP_TEMPLATE)
        if reason is not None:
            return None, reason  # a shorter name would not make the path fit reliably
        return name, None
    if not rename_invalid:
        return None, reason
    safe = _safe(name)
    base, ext = names.split_ext(safe)
    n = 1
    while _why(safe, taken) is not None:
        n += 1
        safe = f"{base} ({n}){ext}"
    refusal = names.path_refusal([*parts, safe], tmp=None if is_dir else TMP_TEMPLATE)
    if refusal is not None:
        return None, f"{reason}; renamed, {refusal}"
    return safe, reason


def _why(name: str, taken: dict[str, str]) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    reason = names.why_invalid(name)
    if reason is not None:
        return reason
    other = taken.get(names.fold(name))
    if other is not None:
        return f"differs only in case from {other!r}, which the share takes for the same name"
    return None


def _safe(name: str) -> str:
    """A name the share can hold, as close to `name` as can be."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join("_" if c in names.FORBIDDEN else c for c in text)
    if text.endswith("."):
        text = text[:-1] + "_"
    if text.upper() in names.RESERVED or text.split(".")[0].upper() in names.RESERVED:
        text = "_" + text
    while names.too_long(text):
        base, ext = names.split_ext(text)
        text = base[:-1] + ext if len(base) > 1 else text[:-1]
    return text or "_"


_AT_FDCWD, _AT_SYMLINK_NOFOLLOW, _STATX_ALL, _STATX_BTIME = -100, 0x100, 0xFFF, 0x800
_libc: ctypes.CDLL | None = None


def birth_ns(path: bytes) -> int | None:
    """A file's creation time (statx(2) birth time), None where the filesystem keeps none
    (or reports 0). Python 3.11 has no os.statx: glibc's statx is called directly."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _libc.statx(_AT_FDCWD, path, _AT_SYMLINK_NOFOLLOW, _STATX_ALL, buf) != 0:
        return None
    (mask,) = struct.unpack_from("I", buf, 0)
    sec, nsec = struct.unpack_from("qI", buf, 80)  # stx_btime
    if not mask & _STATX_BTIME or sec <= 0:
        return None
    return sec * 1_000_000_000 + nsec


def _entry(rel: bytes, share: str, kind: str, st: os.stat_result) -> Entry:
    return Entry(
        rel=rel,
        share=share,
        kind=kind,
        size=st.st_size if kind == FILE else 0,
        mtime_ns=st.st_mtime_ns,
        ino=st.st_ino,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        rdev=st.st_rdev if kind in ("c", "b") else 0,
    )


def dirs_by_depth(entries: list[Entry]) -> list[list[Entry]]:
    """Directories grouped by depth, shallowest first (made before their content; their
    times are set after it, deepest first)."""
    levels: dict[int, list[Entry]] = {}
    for e in entries:
        if e.kind == DIR:
            levels.setdefault(e.rel.count(b"/") + (1 if e.rel else 0), []).append(e)
    return [levels[d] for d in sorted(levels)]


def pread(path: bytes, offset: int, length: int) -> bytes:
    """`length` bytes of a source file from `offset` (fewer at its end)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def show(rel: bytes) -> str:
    """A source path for the report (undecodable bytes shown as escapes)."""
    return rel.decode("utf-8", "backslashreplace")
